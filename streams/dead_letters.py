"""Dead letters as the stage runtime writes them: the original message, why it failed, always within the topic's limit.

Guarantee: the encoded DeadLetter is never larger than the limit it is given. The error text is
bounded; the key and value are kept whole when they fit, else a bounded prefix of each is kept
with the full length and SHA-256 of what was cut.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from confluent_kafka import Message

from schemas.errors import DecodeError, InvalidRecordError
from schemas.records import dead_letter
from schemas.settings import KafkaSettings

ERROR_TEXT_LIMIT = 2_000
_PREFIX_BYTES = 4_096
_ENVELOPE_MARGIN_BYTES = 1_024


def error_kind(error: Exception) -> str:
    """The dead letter's ``error_kind`` for an error a stage rejected a message with."""
    if isinstance(error, DecodeError):
        return error.kind.value
    if isinstance(error, InvalidRecordError):
        return "invalid_record"
    kind = getattr(error, "dead_letter_kind", None)
    return kind if isinstance(kind, str) else "failed"


def bounded_text(text: str, limit: int = ERROR_TEXT_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[: limit - 40]}... [{len(text) - limit + 40} more characters]"


class DeadLetterWriter:
    """Encodes DeadLetter records (the deployment's framing) that fit a given size."""

    def __init__(self, kafka: KafkaSettings, *, wall_clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._codec = kafka.codec("DeadLetter")
        self._clock = wall_clock_ns

    def encode(self, message: Message, error: Exception, *, stage: str, limit_bytes: int) -> tuple[bytes | None, bytes]:
        """(Kafka key, value) of the dead letter of ``message``, at most ``limit_bytes`` in all."""
        key, value = message.key(), message.value()
        reason = bounded_text(str(error))
        budget = limit_bytes - len(reason.encode()) - _ENVELOPE_MARGIN_BYTES
        notes = []
        if key is not None and len(key) > min(_PREFIX_BYTES, max(budget, 0)):
            notes.append(_cut_note("key", key))
            key = key[:_PREFIX_BYTES]
        if value is not None and len(value) + 2 * (len(key) if key else 0) > budget:
            # The key travels twice: as the message key and as the record's raw_key.
            notes.append(_cut_note("value", value))
            value = value[:_PREFIX_BYTES]
        if notes:
            reason = bounded_text(f"{reason} ({'; '.join(notes)})")
        record = dead_letter(
            source_topic=message.topic(),
            source_partition=message.partition(),
            source_offset=message.offset(),
            raw_key=key,
            raw_value=value,
            error_kind=error_kind(error),
            error=reason,
            stage=stage,
            now_unix_nano=self._clock(),
        )
        return key, self._codec.encode(record)


def _cut_note(what: str, data: bytes) -> str:
    return f"raw {what} of {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}, kept: first {_PREFIX_BYTES} bytes"
