"""Prompt templates: Jinja2 in a sandbox, strict about variables, checked when pushed, and split
across versions by weight, stably per job."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from broker.errors import TemplateError
from workers.templates.catalog import _pick
from workers.templates.rendering import Template, TemplateSpec, load_file, parse_spec


def template(*messages: tuple[str, str], defaults: dict[str, str] | None = None) -> Template:
    spec = TemplateSpec("t", tuple(messages), tuple(sorted((defaults or {}).items())))
    return Template(spec, 1)


def test_jinja_loops_conditions_and_filters_render() -> None:
    rendered = template(
        ("user", "{% if tone %}Tone: {{ tone | upper }}. {% endif %}{{ text | trim }}"),
        defaults={"tone": ""},
    ).render({"text": "  hello  ", "tone": "warm"})
    assert rendered == [{"role": "user", "content": "Tone: WARM. hello"}]


def test_a_default_fills_a_variable_the_job_left_out() -> None:
    rendered = template(("user", "{{ n }} words"), defaults={"n": "60"}).render({})
    assert rendered[0]["content"] == "60 words"


def test_the_sandbox_refuses_to_reach_python_internals() -> None:
    unsafe = template(("user", "{{ text.__class__.__mro__[1].__subclasses__() }}"))
    with pytest.raises(TemplateError, match="failed to render"):
        unsafe.render({"text": "x"})


def test_a_variable_another_version_of_the_split_uses_is_not_unknown() -> None:
    one = template(("user", "{{ text }}"))
    assert one.render({"text": "a", "tone": "b"}, also_known=frozenset({"tone"}))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "name: a string"),
        ({"name": "n", "messages": []}, "messages: a non-empty list"),
        ({"name": "n", "messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"name": "n", "messages": [{"role": "user", "content": "{{ x"}]}, "not a valid Jinja2"),
        ({"name": "n", "messages": [{"role": "user"}]}, "messages.0: exactly the keys"),
        ({"name": "n", "messages": [{"role": "user", "content": "x"}], "extra": 1}, "extra"),
        (
            {"name": "n", "messages": [{"role": "user", "content": "x"}], "defaults": {"a": 1}},
            "defaults: a table of string values",
        ),
    ],
)
def test_a_bad_template_file_is_refused_naming_the_field(
    data: dict[str, object], message: str
) -> None:
    with pytest.raises(TemplateError, match=message):
        parse_spec(data, "t.toml")


def test_a_toml_file_loads_and_its_digest_ignores_formatting(tmp_path: Path) -> None:
    path = tmp_path / "reply.toml"
    path.write_text(
        'name = "reply"\ndescription = "answer a ticket"\n[defaults]\ntone = "kind"\n'
        '[[messages]]\nrole = "user"\ncontent = "Reply {{ tone }}ly to: {{ ticket }}"\n'
    )
    spec = load_file(path)
    again = tmp_path / "reply.json"
    again.write_text(
        '{"name": "reply", "description": "answer a ticket", "defaults": {"tone": "kind"},'
        ' "messages": [{"role": "user", "content": "Reply {{ tone }}ly to: {{ ticket }}"}]}'
    )
    assert load_file(again).digest() == spec.digest()
    assert Template(spec, 1).variables == {"tone", "ticket"}


def test_a_split_is_stable_per_job_and_follows_the_weights() -> None:
    picks = [_pick([1.0, 3.0], "acme", f"job-{i}") for i in range(4000)]
    assert picks == [_pick([1.0, 3.0], "acme", f"job-{i}") for i in range(4000)]
    counts = Counter(picks)
    assert 850 < counts[0] < 1150 and 2850 < counts[1] < 3150


@pytest.mark.parametrize(
    "content",
    [
        "{{ n | int / 0 }}",  # ZeroDivisionError
        "{{ 10.0 ** (n | int) }}",  # OverflowError (with n = 999)
        "{{ text * 1000000 }}",  # would allocate 1 MB per character of text
        "{{ 2 ** (n | int * 100) }}",
        "{{ text[99] }}",
    ],
)
def test_a_template_whose_arithmetic_fails_on_a_jobs_values_rejects_the_job(content: str) -> None:
    with pytest.raises(TemplateError, match="failed to render"):
        template(("user", "{{ n }}{{ text }}" + content)).render({"n": "999", "text": "abc"})


def test_a_template_named_for_a_tenant_is_that_tenants_alone() -> None:
    from workers.templates.catalog import may_render

    assert may_render("acme/support", "acme")
    assert not may_render("acme/support", "globex")
    assert may_render("summary", "globex")  # shared


async def test_another_tenants_template_is_refused_as_if_it_did_not_exist() -> None:
    from broker.config import RouteConfig
    from schemas.jobs import TemplateRef
    from workers.templates.catalog import TemplateCatalog

    async def no_ledger(work: object) -> None:
        raise AssertionError("refused before any lookup")

    deployment = {"provider": "sim", "model": "m"}
    route = RouteConfig.model_validate({"kind": "chat", "deployments": [deployment]})
    with pytest.raises(TemplateError, match="no template named 'acme/support'"):
        await TemplateCatalog(no_ledger).render(
            TemplateRef(name="acme/support"), route, "globex", "j"
        )
