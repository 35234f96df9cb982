"""The client of the demo's scoring service (`scoring_service`), used by `essays.score`."""

from __future__ import annotations

import hashlib
from typing import Any

from orchestrator.service_clients.client import ServiceClient
from orchestrator.service_clients.errors import ServiceBadResponse
from orchestrator.service_clients.masking import mask_url


class ScoringClient(ServiceClient):
    service = "scoring"

    def model(self) -> dict[str, Any]:
        """The model's description (name, version, pass mark): changes rarely, so cached."""
        return dict(self.json(self.get("/model")))

    def score(self, text: str) -> dict[str, Any]:
        """{"score": 0..1, "model": …}. Scoring is deterministic, so the text's hash is a
        fitting idempotency key: the POST may be retried."""
        key = "score-" + hashlib.sha256(text.encode()).hexdigest()[:32]
        response = self.post("/score", json={"text": text}, idempotency_key=key)
        body = self.json(response)
        if not isinstance(body, dict) or not isinstance(body.get("score"), int | float):
            raise ServiceBadResponse(f"scoring answered without a numeric score: {str(body)[:200]}").describe(
                service=self.name,
                method="POST",
                url=mask_url(str(response.request.url)),
                status_code=response.status_code,
            )
        return body
