"""Security at the edges: rate-limit refusals, admin logins and lockouts, API tokens (hashed,
expiring, revocable, watched for use from new addresses), response headers, the metrics
token. docs/security.md describes them; each module here has one of these jobs."""
