"""Writers into ClickHouse: a server through clickhouse-connect, or the embedded chDB engine."""
