"""docs/settings.md is what the settings classes say: every variable, its default and its meaning."""

from __future__ import annotations

from streams.settings_reference import REFERENCE, SECTIONS, _settings_class, render


def test_reference_file_is_current() -> None:
    assert REFERENCE.read_text(encoding="utf-8") == render(), (
        "docs/settings.md is stale: run `python -m streams.settings_reference --write`"
    )


def test_every_setting_says_what_it_means() -> None:
    undocumented = [
        f"{path}.{name}"
        for _, path, _ in SECTIONS
        for name, field in _settings_class(path).model_fields.items()
        if not (field.description or "").strip()
    ]
    assert undocumented == []


def test_secret_defaults_are_not_printed() -> None:
    text = render()
    assert "SecretStr" not in text and "**********" not in text
