"""The reload-event publisher: ReloadEvents as Avro on the reloads topic, keyed by service_name."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from gateway.delivery import DeliveryStats, make_producer
from gateway.redaction import Redactor
from gateway.settings import GatewaySettings
from schemas.records import ReloadEvent
from schemas.settings import KafkaSettings

_LOG = logging.getLogger(__name__)


class ReloadPublisher:
    """Publishes ReloadEvents; usable directly as a registry listener (``registry.add_listener(publisher)``).

    The key is the service name, so all reloads of a service stay in order on one partition.
    ``model_context`` is redacted before it leaves. Never raises from :meth:`publish`; call
    :meth:`flush` (returns how many are still undelivered) before relying on delivery.

    Args:
        kafka: broker, topics, framing.
        settings: redaction and producer limits (default: from the environment).
        topic: default ``kafka.topics.reloads``.
        redactor: default ``settings.redactor()``.
        producer: a ready confluent-kafka producer (tests).
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: GatewaySettings | None = None,
        *,
        topic: str | None = None,
        redactor: Redactor | None = None,
        producer: Any = None,
    ) -> None:
        self.settings = settings or GatewaySettings()
        self.topic = topic or kafka.topics.reloads
        self.redactor = redactor or self.settings.redactor()
        self.stats = DeliveryStats()
        self._codec = kafka.codec("ReloadEvent")
        self._producer = producer if producer is not None else make_producer(kafka, self.settings, **{"linger.ms": 0})

    def publish(self, event: ReloadEvent) -> None:
        try:
            clean = replace(event, model_context=self.redactor.model_context(event.model_context))
            value = self._codec.encode(clean.to_dict())
            self._producer.produce(
                self.topic, key=event.service_name.encode(), value=value, on_delivery=self.stats.on_delivery
            )
            self.stats.add("produced")
            self._producer.poll(0)
        except BufferError:
            self.stats.add("dropped_queue_full")
            _LOG.error("reload %s dropped: producer queue full", event.reload_id)
        except Exception as error:  # noqa: BLE001 - a reload must never fail because its event could not be sent
            self.stats.add("dropped_invalid")
            self.stats.last_error = repr(error)
            _LOG.exception("reload %s could not be published", event.reload_id)

    __call__ = publish

    def flush(self, timeout_s: float = 10.0) -> int:
        return self._producer.flush(timeout_s)

    def close(self) -> None:
        self.flush(self.settings.exporter_flush_timeout_ms / 1000)
