"""Observability: structured logs and the correlation context every log line carries."""
