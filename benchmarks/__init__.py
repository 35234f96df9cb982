"""Benchmarks: BOS beside hand-written Celery baselines, in the same run."""
