"""Insights around the engine: SLA projection and alerts, anomaly detection, forecasts.

Pure parts (no Django): `projection` (when a batch will finish), `robust` (median/MAD
baselines and the anomaly detector), `forecasting` (Holt's linear trend, the breaker
trend), `backtest` (synthetic traces with known faults, scored). Writing and reading
parts: `sla` (per-batch SLA state, events and alerts), `watch` (anomalies, predicted
error surges and breaker trips, raised as alerts). See docs/anomalies.md.
"""
