"""The confluent-kafka producer of the gateway and the counters of what it delivered or dropped."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Producer

from gateway.settings import GatewaySettings
from schemas.settings import KafkaSettings

_LOG = logging.getLogger(__name__)


@dataclass
class DeliveryStats:
    """Counters of one producer; every record handed in ends in exactly one of the outcomes
    ``delivered``, ``delivery_failed`` or a ``dropped_*`` counter, or is still ``in_flight``."""

    produced: int = 0
    delivered: int = 0
    delivery_failed: int = 0
    dropped_queue_full: int = 0
    dropped_invalid: int = 0
    dropped_after_shutdown: int = 0
    last_error: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, count: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + count)

    def on_delivery(self, error: KafkaError | None, _message: Any) -> None:
        if error is None:
            self.add("delivered")
        else:
            self.add("delivery_failed")
            self.last_error = str(error)

    @property
    def dropped(self) -> int:
        return self.dropped_queue_full + self.dropped_invalid + self.dropped_after_shutdown + self.delivery_failed

    @property
    def in_flight(self) -> int:
        return self.produced - self.delivered - self.delivery_failed

    def as_dict(self) -> dict[str, int]:
        return {
            "produced": self.produced,
            "delivered": self.delivered,
            "delivery_failed": self.delivery_failed,
            "dropped_queue_full": self.dropped_queue_full,
            "dropped_invalid": self.dropped_invalid,
            "dropped_after_shutdown": self.dropped_after_shutdown,
            "in_flight": self.in_flight,
        }


def _log_client_error(error: KafkaError) -> None:
    _LOG.warning("kafka producer: %s", error)


def make_producer(kafka: KafkaSettings, gateway: GatewaySettings, **overrides: Any) -> Producer:
    """A producer whose queue is bounded by ``exporter_queue_max_messages`` (BufferError beyond)."""
    config = kafka.confluent_config() | {
        "queue.buffering.max.messages": gateway.exporter_queue_max_messages,
        "message.timeout.ms": gateway.exporter_message_timeout_ms,
        "linger.ms": gateway.exporter_linger_ms,
        "compression.type": "lz4",
        "error_cb": _log_client_error,
    }
    return Producer(config | overrides)
