"""The client's address of an HTTP request, honouring the configured trusted proxies.

`REMOTE_ADDR` is the peer. Only when the peer is one of `BOS_TRUSTED_PROXIES` (addresses or
CIDR networks: the load balancer, the ingress) is `X-Forwarded-For` believed, read from the
right: the first address that is not itself a trusted proxy is the client. An untrusted
peer's `X-Forwarded-For` is ignored, so no client can choose the address it is logged with.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def _networks(spec: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(s.strip(), strict=False) for s in spec if s.strip())


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def _trusted(value: str, networks: tuple[Network, ...]) -> bool:
    address = _address(value)
    return address is not None and any(address in n for n in networks)


def client_address(meta: Any, trusted_proxies: Iterable[str]) -> str | None:
    """The client's IP address from a request's `META`, or None when it has none."""
    networks = _networks(tuple(trusted_proxies))
    peer = str(meta.get("REMOTE_ADDR") or "")
    if not _address(peer):
        return None
    if not _trusted(peer, networks):
        return peer
    forwarded = [a.strip() for a in str(meta.get("HTTP_X_FORWARDED_FOR") or "").split(",") if a.strip()]
    for hop in reversed(forwarded):
        if not _address(hop):
            break  # a garbled hop: the last good one is as far as we can trust
        if not _trusted(hop, networks):
            return hop
        peer = hop
    return peer
