"""Producer side: reload handles, OpenTelemetry span processing and export to Kafka, traffic simulation."""
