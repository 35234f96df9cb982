"""The metrics token (`BOS_METRICS_TOKEN`): `/metrics` and the `BOS_METRICS_PORT` exporter
answer only `Authorization: Bearer <token>` when it is set (Prometheus'
`authorization: {credentials_file: …}`), else a 401 JSON `{code, message}`."""

from __future__ import annotations

import hmac

SCHEME = "bearer"


def allowed(header: str | None, token: str | None) -> bool:
    """May a request with this Authorization header read the metrics?"""
    if not token:
        return True
    scheme, _, given = str(header or "").strip().partition(" ")
    if scheme.lower() != SCHEME:
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


UNAUTHORIZED = (
    b'{"code": "not_authenticated", "message": "the metrics need Authorization: Bearer <BOS_METRICS_TOKEN>"}'
)
