"""Writers into ClickHouse: a server through clickhouse-connect, or the embedded chDB engine.

The Kafka side (topics in, commit after flush) is the sink stage, :mod:`streams.sink`; nothing here
imports ``streams``.

Public API:
    * :class:`sinks.clickhouse.ClickHouseSink` — ``add(SinkRecord)`` / ``flush()`` / ``query(sql)``;
      :func:`sinks.clickhouse.open_client` — a clickhouse-connect client for a sink URL.
    * :class:`sinks.settings.SinkSettings` — ``RELOADTRACE_SINK_*``; :func:`sinks.ddl.apply_schema`.
    * :class:`sinks.base.BatchingSink` — the base a destination subclasses (``write(batch)`` only).
"""
