"""What the gate knows of every reload (pure state): its event, its latest look, its anomalies.

Fed from three topics read whole (``reloads``, ``reload.verdicts``, ``reload.anomalies``) in any
interleaving; each addition is idempotent and order-tolerant: a reload's identity comes from the
best source seen (its looks, else its event; the first record of each), its latest look is the one
with the greatest look time, and each metric keeps its strongest anomaly. So a store rebuilt from
the topics equals the one that followed them live. Lookups by ``(service, component, version)``
answer the reload that installed that version most recently (greatest effective time). Safe to
read from one thread while another writes. Memory: one entry per reload in the topics' retention
(about 1-2 KB each).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from schemas.records import Anomaly
from streams.gate.phase import SEVERITY_RANK

_NEVER = -(2**63)
_IDENTITY_FIELDS = (
    "reload_id",
    "service_name",
    "service_instance_id",
    "component",
    "old_version",
    "new_version",
    "status",
    "requested_time_unix_nano",
    "effective_time_unix_nano",
)

IdentityKey = tuple[str, str, str]
"""(service, component, new_version)."""


@dataclass(frozen=True, slots=True)
class ReloadEntry:
    """One reload as known now (immutable: the store swaps whole entries)."""

    reload: Mapping[str, Any]
    """The reload's identity: the ReloadEvent fields a verdict carries too (see ``identity_rank``)."""
    identity_rank: int = 0
    """Where the identity came from: a look (2: what the detector judged) beats the reload event (1), which
    beats an anomaly (0, which carries no times); within a rank the first record wins."""
    from_reloads_topic: bool = False
    verdict: Mapping[str, Any] | None = None
    """The latest look (a ReloadVerdict record), or None before the first."""
    verdict_published_unix_nano: int | None = None
    """When the detector published that look (its message's timestamp)."""
    anomalies: Mapping[str, Anomaly] = field(default_factory=dict)
    """metric -> its strongest anomaly."""

    @property
    def key(self) -> IdentityKey:
        return (self.reload["service_name"], self.reload["component"], self.reload["new_version"])

    @property
    def order(self) -> tuple[int, str]:
        return (self.reload["effective_time_unix_nano"], self.reload["reload_id"])


_FROM_ANOMALY, _FROM_RELOAD, _FROM_VERDICT = 0, 1, 2


def _identity(record: Mapping[str, Any]) -> dict[str, Any]:
    return {name: record.get(name) for name in _IDENTITY_FIELDS}


class VerdictStore:
    """Reload entries by id and by (service, component, version)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, ReloadEntry] = {}
        self._by_key: dict[IdentityKey, tuple[str, ...]] = {}
        self.detector_last_published_unix_nano: int | None = None
        """When the detector published the newest look the store holds (any reload)."""

    # --- writes (the stage's thread) ------------------------------------------------------------

    def add_reload(self, record: Mapping[str, Any]) -> None:
        """A ReloadEvent record from ``reloads`` (a reload may be known before any look at it)."""
        with self._lock:
            entry = self._entries.get(record["reload_id"]) or ReloadEntry(_identity(record), _FROM_RELOAD)
            self._put(self._identified(entry, record, _FROM_RELOAD))
            entry = self._entries[record["reload_id"]]
            if not entry.from_reloads_topic:
                self._entries[record["reload_id"]] = replace(entry, from_reloads_topic=True)

    def add_verdict(self, record: Mapping[str, Any], published_unix_nano: int) -> None:
        """A ReloadVerdict record; kept when it is the reload's latest look so far."""
        with self._lock:
            if (
                self.detector_last_published_unix_nano is None
                or published_unix_nano > self.detector_last_published_unix_nano
            ):
                self.detector_last_published_unix_nano = published_unix_nano
            entry = self._entries.get(record["reload_id"]) or ReloadEntry(_identity(record), _FROM_VERDICT)
            entry = self._identified(entry, record, _FROM_VERDICT)
            current = entry.verdict
            if current is None or record["look_time_unix_nano"] >= current["look_time_unix_nano"]:
                entry = replace(entry, verdict=record, verdict_published_unix_nano=published_unix_nano)
            self._put(entry)

    def add_anomaly(self, anomaly: Anomaly) -> None:
        """An anomaly; each metric of a reload keeps its strongest."""
        with self._lock:
            entry = self._entries.get(anomaly.reload_id)
            if entry is None:
                # Anomalies carry no times of the reload: an entry made from one has no effective time yet.
                identity = _identity(anomaly.to_dict()) | {
                    "effective_time_unix_nano": _NEVER,
                    "requested_time_unix_nano": _NEVER,
                }
                entry = ReloadEntry(identity, _FROM_ANOMALY)
            current = entry.anomalies.get(anomaly.metric)
            if current is None or SEVERITY_RANK[anomaly.severity] > SEVERITY_RANK[current.severity]:
                entry = replace(entry, anomalies=dict(entry.anomalies) | {anomaly.metric: anomaly})
            self._put(entry)

    @staticmethod
    def _identified(entry: ReloadEntry, record: Mapping[str, Any], rank: int) -> ReloadEntry:
        return replace(entry, reload=_identity(record), identity_rank=rank) if rank > entry.identity_rank else entry

    def _put(self, entry: ReloadEntry) -> None:
        reload_id = entry.reload["reload_id"]
        previous = self._entries.get(reload_id)
        if previous is not None and previous.key != entry.key:
            kept = tuple(other for other in self._by_key.get(previous.key, ()) if other != reload_id)
            if kept:
                self._by_key[previous.key] = kept
            else:
                self._by_key.pop(previous.key, None)
        self._entries[reload_id] = entry
        ids = self._by_key.get(entry.key, ())
        if reload_id not in ids:
            self._by_key[entry.key] = (*ids, reload_id)

    # --- reads (any thread) ----------------------------------------------------------------------

    def by_reload_id(self, reload_id: str) -> ReloadEntry | None:
        return self._entries.get(reload_id)

    def find(self, service: str, component: str, version: str, instance: str | None = None) -> ReloadEntry | None:
        """The latest reload (greatest effective time) of ``service``/``component`` to ``version``.

        ``instance`` keeps only the canary reloads of that instance; None considers every reload.
        """
        entries = self._entries
        best: ReloadEntry | None = None
        for reload_id in self._by_key.get((service, component, version), ()):
            entry = entries.get(reload_id)
            if entry is None or (instance is not None and entry.reload.get("service_instance_id") != instance):
                continue
            if best is None or entry.order > best.order:
                best = entry
        return best

    def matches(self, service: str, component: str, version: str) -> int:
        """How many reloads installed ``version`` of ``service``/``component``."""
        return len(self._by_key.get((service, component, version), ()))

    def __len__(self) -> int:
        return len(self._entries)
