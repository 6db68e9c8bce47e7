"""`headway docs` serves the AsyncAPI document of the deployment's own topic prefix (and the
viewer page); `headway docs --print` writes the same document the repository commits."""

from __future__ import annotations

import httpx
import pytest
import yaml

from broker.asyncapi import render
from broker.docs_site import DocsSite
from broker.settings import Settings
from workers.cli.main import main


async def test_the_docs_site_serves_the_document_for_the_configured_prefix() -> None:
    site = DocsSite(Settings(topic_prefix="acme"), port=0)
    async with site, httpx.AsyncClient(base_url=f"http://127.0.0.1:{site.port}") as http:
        page, text, data = (
            await http.get("/"),
            await http.get("/asyncapi.yaml"),
            await http.get("/asyncapi.json"),
        )
    assert page.status_code == 200 and "AsyncApiStandalone" in page.text
    document = yaml.safe_load(text.text)
    assert data.json() == document
    assert document["asyncapi"] == "3.0.0"
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert {"acme.jobs.high", "acme.jobs.normal", "acme.jobs.low", "acme.results"} <= addresses


def test_docs_print_writes_the_committed_document(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HEADWAY_TOPIC_PREFIX", raising=False)
    main(["docs", "--print"])
    assert capsys.readouterr().out == render()
