"""Celery tasks (thin: take ids, call one service) and the phase handlers."""
