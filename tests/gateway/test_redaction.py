"""Redaction: default deny-list, globs and regexes, drop or salted hash, on every path out of the process."""

from __future__ import annotations

import pytest

from gateway.convert import span_record
from gateway.redaction import REDACTED_PREFIX, Redactor
from tests.gateway.helpers import instrumented

SENSITIVE = [
    "Authorization",
    "http.request.header.authorization",
    "Proxy-Authorization",
    "cookie",
    "Set-Cookie",
    "http.response.header.set-cookie",
    "x-api-key",
    "api_key",
    "apiKey",
    "db.password",
    "access_token",
    "refresh_token",
    "client_secret",
    "AWS_SECRET",
    "private_key",
    "session_id",
]
HARMLESS = [
    "gen_ai.usage.input_tokens",
    "gen_ai.request.max_tokens",
    "reload.version.credentials",
    "reload.reload_id.credentials",
    "reload.version_at_end.api_key",  # a component may be named anything: its version is never a secret
    "feature_flag.set.id",
    "http.route",
    "tokenizer",
    "secretary.name",
    "gen_ai.request.model",
]


@pytest.mark.parametrize("key", SENSITIVE)
def test_default_deny_list_catches_secrets_case_insensitively(key: str) -> None:
    assert Redactor().is_denied(key)


@pytest.mark.parametrize("key", HARMLESS)
def test_default_deny_list_keeps_ordinary_keys(key: str) -> None:
    assert not Redactor().is_denied(key)


def test_custom_globs_and_regexes() -> None:
    redactor = Redactor(deny_patterns=["*.ssn", "re:^user\\.(email|phone)$"])
    assert redactor.is_denied("customer.SSN") and redactor.is_denied("user.email")
    assert not redactor.is_denied("user.emails") and not redactor.is_denied("authorization")
    with pytest.raises(ValueError):
        Redactor(deny_patterns=["re:("])


def test_drop_and_salted_hash_modes() -> None:
    attributes = {"authorization": "Bearer sk-1", "http.route": "/v1/chat"}
    assert Redactor().apply(attributes) == {"http.route": "/v1/chat"}
    hashed = Redactor(mode="hash", salt="s1").apply(attributes)
    assert hashed["authorization"].startswith(REDACTED_PREFIX) and "sk-1" not in hashed["authorization"]
    assert hashed == Redactor(mode="hash", salt="s1").apply(attributes)  # same salt correlates
    assert hashed != Redactor(mode="hash", salt="s2").apply(attributes)


def test_span_record_redacts_span_and_resource_attributes_and_model_context() -> None:
    provider, _registry, exporter, _ = instrumented()
    provider._resource = provider.resource.merge(
        type(provider.resource)({"service.name": "llm-gateway", "deployment.api_key": "sk-resource"})
    )
    with provider.get_tracer("app").start_as_current_span(
        "request", attributes={"http.request.header.cookie": "sid=42", "user.password": "hunter2", "ok": 1}
    ):
        pass
    (span,) = exporter.get_finished_spans()
    assert "sk-resource" in repr(span_record(span, Redactor(deny_patterns=())))  # present before redaction
    record = span_record(span, Redactor())
    assert "hunter2" not in repr(record) and "sid=42" not in repr(record) and "sk-resource" not in repr(record)
    assert record["attributes"]["ok"] == 1
    assert Redactor().model_context({"model.id": "gpt-4o", "api_key": "sk-x"}) == {"model.id": "gpt-4o"}
