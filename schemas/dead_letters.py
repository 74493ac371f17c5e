"""Dead letters that always fit their topic: bounded error text, the raw bytes whole or as prefix + length + SHA-256.

:class:`DeadLetterBuilder` turns "this message could not be used, because ..." into a
``DeadLetter`` record (``schemas/avro/DeadLetter.v2.avsc``) and its encoded Kafka message.
Guarantees, for any key, value and error text:

* the encoded message (key + framed value + Kafka's per-record overhead) fits ``max_message_bytes``
  (the dead-letter topic's ``max.message.bytes``, at most the producer's ``message.max.bytes``);
* the error text is at most ``max_error_chars`` characters, and says how long it was when cut;
* topic, partition, offset, kind and stage are kept exactly; the raw value is kept byte for byte
  when it fits, else its first bytes, with ``raw_value_length``, ``raw_value_sha256`` (always set
  for a non-null value) and ``truncated``; a key longer than ``max_key_bytes`` is cut the same way.

Building never raises on hostile input; only a limit too small to hold a record is refused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from schemas.codec import Codec, codec_for
from schemas.text import MAX_ERROR_CHARS, bounded_text

KAFKA_MESSAGE_LIMIT_BYTES = 1_000_000
"""Default limit: librdkafka's ``message.max.bytes`` (the broker's own ``max.message.bytes`` is 1,048,588)."""
RECORD_OVERHEAD_BYTES = 512
"""Allowance for Kafka's record-batch and record framing around key and value (librdkafka counts ~90)."""
MAX_KEY_BYTES = 1_024
"""Longest key kept whole (in the record and as the dead letter's Kafka key)."""
_MIN_MESSAGE_BYTES = 16_384
_LABEL_CHARS = 200


@dataclass(frozen=True, slots=True)
class DeadLetterMessage:
    """A dead letter ready to produce: Kafka ``key`` and ``value`` (encoded ``record``)."""

    key: bytes | None
    value: bytes
    record: dict[str, Any]


class DeadLetterBuilder:
    """Builds bounded dead letters with one codec (the dead-letter topic's framing).

    Args:
        codec: encodes ``DeadLetter`` records (default: single-object framing).
        max_message_bytes: the limit the encoded message must fit.
        max_key_bytes: longest key kept whole.
        max_error_chars: longest error text kept.

    Raises:
        ValueError: ``max_message_bytes`` below 16 KiB (no room for a record and a prefix).
    """

    def __init__(
        self,
        codec: Codec | None = None,
        *,
        max_message_bytes: int = KAFKA_MESSAGE_LIMIT_BYTES,
        max_key_bytes: int = MAX_KEY_BYTES,
        max_error_chars: int = MAX_ERROR_CHARS,
    ) -> None:
        if max_message_bytes < _MIN_MESSAGE_BYTES:
            raise ValueError(f"max_message_bytes must be >= {_MIN_MESSAGE_BYTES}, got {max_message_bytes}")
        self.codec = codec or codec_for("DeadLetter")
        self.max_message_bytes = max_message_bytes
        self._max_key_bytes = max_key_bytes
        self._max_error_chars = max_error_chars

    def message(
        self,
        *,
        source_topic: str,
        source_partition: int,
        source_offset: int,
        raw_key: bytes | None,
        raw_value: bytes | None,
        error_kind: str,
        error: str,
        stage: str,
        now_unix_nano: int,
        source_index: int = -1,
    ) -> DeadLetterMessage:
        """The dead letter of one message, encoded, within ``max_message_bytes``."""
        key = None if raw_key is None else bytes(raw_key)
        value = None if raw_value is None else bytes(raw_value)
        kept_key = key if key is None or len(key) <= self._max_key_bytes else key[: self._max_key_bytes]
        record = {
            "source_topic": bounded_text(str(source_topic), _LABEL_CHARS),
            "source_partition": int(source_partition),
            "source_offset": int(source_offset),
            "raw_key": kept_key,
            "raw_value": value,
            "error_kind": bounded_text(str(error_kind), _LABEL_CHARS),
            "error": bounded_text(str(error), self._max_error_chars),
            "stage": bounded_text(str(stage), _LABEL_CHARS),
            "dead_lettered_time_unix_nano": int(now_unix_nano),
            "raw_key_length": None if key is None else len(key),
            "raw_value_length": None if value is None else len(value),
            "raw_value_sha256": None if value is None else hashlib.sha256(value).hexdigest(),
            "truncated": kept_key is not key,
            "source_index": int(source_index),
        }
        budget = self.max_message_bytes - RECORD_OVERHEAD_BYTES - len(kept_key or b"")
        encoded = self.codec.encode(record)
        if len(encoded) > budget and value is not None:
            empty = self.codec.encode(record | {"raw_value": b"", "truncated": True})
            room = max(0, budget - len(empty) - 10)  # 10: the longest Avro length varint
            record = record | {"raw_value": value[:room], "truncated": True}
            encoded = self.codec.encode(record)
        if len(encoded) > budget:  # cannot happen with the bounded fields above; never produce an oversized letter
            raise ValueError(f"dead letter of {len(encoded)} bytes does not fit {budget}")
        return DeadLetterMessage(kept_key, encoded, record)

    def record(self, **fields: Any) -> dict[str, Any]:
        """The bounded ``DeadLetter`` record only (for a sink that stores it without Kafka); same arguments."""
        return self.message(**fields).record

