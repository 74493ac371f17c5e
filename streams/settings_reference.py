"""The settings reference (``docs/settings.md``): every environment variable of every component, from its settings class.

``python -m streams.settings_reference`` prints it; ``--write`` rewrites ``docs/settings.md``. A test
compares the file with what this generates, so the reference cannot drift from the code: a field
added to a settings class without a regenerated reference fails the suite.
"""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Iterator
from pathlib import Path

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from streams.serve import LOGLEVEL_ENV

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "settings.md"

# (title, "module:Class", who reads it); in the order a newcomer meets them.
SECTIONS: tuple[tuple[str, str, str], ...] = (
    ("Kafka", "schemas.settings:KafkaSettings", "everything that talks to Kafka"),
    ("Worker (enricher and its runtime)", "streams.settings:WorkerSettings", "`reloadtrace worker`"),
    ("Streaming detector", "streams.detector:DetectorSettings", "the worker's detector, `reloadtrace detect`"),
    ("Detection thresholds", "streams.detection:DetectionSettings", "the detector, `reloadtrace replay`"),
    ("ClickHouse sink", "sinks.settings:SinkSettings", "the worker's sink, `reloadtrace sink`"),
    ("Alerting hooks", "streams.alerts:AlertSettings", "`reloadtrace alerts`"),
    ("Delivery gate", "streams.gate.settings:GateSettings", "`reloadtrace gate`"),
    ("Gateway library", "gateway.settings:GatewaySettings", "services embedding `gateway/`"),
)


def _settings_class(path: str) -> type[BaseSettings]:
    module, name = path.split(":")
    found = getattr(importlib.import_module(module), name)
    if not (isinstance(found, type) and issubclass(found, BaseSettings)):
        raise TypeError(f"{path} is not a settings class")
    return found


def _variables(cls: type[BaseSettings], name: str, field: FieldInfo) -> list[str]:
    """The environment variables that set ``name``: its aliases when it has them, else prefix + NAME."""
    choices = getattr(field.validation_alias, "choices", None)
    if choices:
        return [str(choice).upper() for choice in choices]
    if isinstance(field.validation_alias, str):
        return [field.validation_alias.upper()]
    return [f"{cls.model_config.get('env_prefix', '')}{name}".upper()]


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True) if field.default_factory is not None else field.default
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "unset"
    if hasattr(value, "get_secret_value"):  # a default written in code, never an operator's secret
        value = value.get_secret_value()
    if value == "":
        return "empty"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    return str(getattr(value, "value", value))


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _rows(cls: type[BaseSettings]) -> Iterator[str]:
    for name, field in cls.model_fields.items():
        variables = " / ".join(f"`{variable}`" for variable in _variables(cls, name, field))
        yield f"| {variables} | `{_cell(_default(field))}` | {_cell(field.description or '')} |"


def render() -> str:
    """The whole reference as Markdown."""
    lines = [
        "# Settings reference",
        "",
        "Every environment variable, generated from the settings classes by",
        "`python -m streams.settings_reference --write` (a test fails when this file is stale).",
        "Command-line flags, where a command has them, take precedence over the environment.",
        "",
    ]
    for title, path, readers in SECTIONS:
        lines += [f"## {title}", "", f"`{path.replace(':', '.')}`, read by {readers}.", ""]
        lines += ["| Variable | Default | Meaning |", "|---|---|---|", *_rows(_settings_class(path)), ""]
    lines += [
        "## Logging",
        "",
        "`streams.serve.configure_logging`, read by `sink`, `detect`, `alerts`, `gate` and a worker's child processes"
        " (the worker sets it to its `--loglevel` for them).",
        "",
        "| Variable | Default | Meaning |",
        "|---|---|---|",
        f"| `{LOGLEVEL_ENV}` | `info` | The lowest level logged: crit, error, warn, info or debug |",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.settings_reference", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {REFERENCE.name} instead of printing")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        REFERENCE.write_text(text, encoding="utf-8")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
