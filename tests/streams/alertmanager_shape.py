"""Alertmanager's webhook payload (version 4) as a JSON Schema, written from its documentation.

The ``webhook_config`` section of Alertmanager's configuration documents the body it POSTs:
``version``, ``groupKey``, ``truncatedAlerts``, ``status`` (resolved|firing), ``receiver``,
``groupLabels``, ``commonLabels``, ``commonAnnotations``, ``externalURL`` and ``alerts``, each
with ``status``, ``labels``, ``annotations``, ``startsAt``/``endsAt`` (RFC 3339), ``generatorURL``
and ``fingerprint``. Labels and annotations are maps of strings.
"""

from __future__ import annotations

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_TIME = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"}
_STATUS = {"enum": ["firing", "resolved"]}

WEBHOOK_V4 = {
    "type": "object",
    "required": [
        "version",
        "groupKey",
        "truncatedAlerts",
        "status",
        "receiver",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "alerts",
    ],
    "properties": {
        "version": {"const": "4"},
        "groupKey": {"type": "string"},
        "truncatedAlerts": {"type": "integer", "minimum": 0},
        "status": _STATUS,
        "receiver": {"type": "string"},
        "groupLabels": _STRING_MAP,
        "commonLabels": _STRING_MAP,
        "commonAnnotations": _STRING_MAP,
        "externalURL": {"type": "string"},
        "alerts": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"],
                "properties": {
                    "status": _STATUS,
                    "labels": _STRING_MAP | {"required": ["alertname"]},
                    "annotations": _STRING_MAP,
                    "startsAt": _TIME,
                    "endsAt": _TIME,
                    "generatorURL": {"type": "string"},
                    "fingerprint": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                },
            },
        },
    },
}
