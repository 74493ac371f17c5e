"""The project's OpenTelemetry Collector (Go sources here; the launcher is :mod:`infra.otelcol.collector`)."""
