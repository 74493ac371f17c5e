"""The library a service imports: reload handles, version pinning, OTel span processing and export to Kafka.

Public API:
    * :class:`gateway.handle.ReloadRegistry` / :class:`gateway.handle.ReloadHandle` — one versioned,
      atomically swapped snapshot per component; every reload is traced and emitted as a ReloadEvent.
    * :func:`gateway.pinning.pin` — the versions one request sees, from start to end.
    * :func:`gateway.processor.kafka_span_processor` — stamps versions on spans, exports them through
      :class:`gateway.exporter.KafkaSpanExporter`; :class:`gateway.publisher.ReloadPublisher` publishes reloads.
    * :class:`gateway.watch.FileWatch` — reloads a handle from a watched file; :mod:`gateway.baggage` —
      versions as W3C baggage across services; :class:`gateway.settings.GatewaySettings` — redaction, limits.

The traffic simulator and the ``simulate`` / ``produce`` commands are :mod:`gateway.simulation`, which
nothing here imports.
"""
