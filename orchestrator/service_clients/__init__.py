"""HTTP clients for the downstream services that phase handlers call.

One small base (`client.ServiceClient`) gives every client timeouts, retries with
backoff, the service's circuit breaker, a Redis cache of idempotent GETs, a masked log
line per request, and health figures for `/metrics` and `/readyz`. One module per job:

- `config`   — `BOS_SERVICES`: one validated `ServiceConfig` per service
- `context`  — the correlation id (and the breaker the engine already counts) of a call
- `errors`   — failures mapped to the handler error types the engine retries by
- `retries`  — what is retried, and how long to wait (tenacity)
- `masking`  — secrets out of URLs, headers and bodies before they are logged
- `store`    — the Redis connection the cache and the health figures share
- `cache`    — the GET cache in Redis
- `health`   — per-service counters and a rolling window in Redis; `/readyz` detail
- `metrics`  — the Prometheus collector for `/metrics`
- `client`   — `ServiceClient`, the base
- `scoring`  — the demo's client; `scoring_service` — the demo's scoring service itself

See docs/service-clients.md.
"""
