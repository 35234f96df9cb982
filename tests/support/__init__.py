"""Helpers for tests: factories, handlers for test pipelines, Kafka and worker utilities."""
