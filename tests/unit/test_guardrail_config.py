"""Guardrail policies in the config file: a bad one is refused with the key named; a plug-in
that cannot be imported stops the worker at start, naming it."""

from __future__ import annotations

import re
from typing import Any

import pytest

from broker.config import development_config, parse_config
from broker.errors import ConfigError
from workers.guardrails.screening import Guardrails


def with_guardrails(policies: dict[str, Any], route: list[str]) -> dict[str, Any]:
    data = development_config().model_dump(mode="json", exclude_none=True)
    data["guardrails"] = policies
    data["routes"]["summarize"]["guardrails"] = route
    return data


@pytest.mark.parametrize(
    ("policies", "route", "message"),
    [
        ({}, ["strict"], "routes.summarize.guardrails: no policy named 'strict'"),
        ({"p": {"block_patterns": ["(unclosed"]}}, ["p"], "block_patterns.0: not a valid regex"),
        ({"p": {"redact_pii": ["passport"]}}, ["p"], "guardrails.p.redact_pii.0"),
        ({"p": {"injection": "maybe"}}, ["p"], "guardrails.p.injection"),
        ({"p": {"plugins": ["no colon"]}}, ["p"], "guardrails.p.plugins.0"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_key(
    policies: dict[str, Any], route: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(with_guardrails(policies, route))


def test_a_plugin_that_cannot_be_imported_stops_the_worker_naming_it() -> None:
    config = parse_config(with_guardrails({"p": {"plugins": ["nowhere.at_all:Guard"]}}, ["p"]))
    with pytest.raises(
        ConfigError, match=re.escape("guardrails.p.plugins: 'nowhere.at_all:Guard'")
    ):
        Guardrails(config)
