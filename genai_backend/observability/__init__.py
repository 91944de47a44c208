"""Metrics (Prometheus), traces (OpenTelemetry) and request-aware logs; call sites elsewhere stay one line."""
