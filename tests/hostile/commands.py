"""Seeded hostile OpenAI Batch input lines (``headway submit``) and control commands
(``headway.control``: ``cancel``, ``set_budget``), drawn from a :class:`Fuzz`'s generator."""

from __future__ import annotations

from typing import Any

from broker.client import sign
from broker.topics import HEADER_SIGNATURE
from tests.hostile.generators import NASTY_NUMBERS, NASTY_TEXT, Fuzz
from tests.hostile.producer import Header, RawName

BATCH_URLS = ["/v1/chat/completions", "/v1/embeddings"]


def batch_line(fuzz: Fuzz, custom_id: str) -> str:
    """One OpenAI Batch input line: well-formed, then one to three things made hostile."""
    rng = fuzz.rng
    body: dict[str, Any] = {
        "model": "summarize",
        "messages": [{"role": "user", "content": f"Summarise {custom_id}."}],
    }
    line: dict[str, Any] = {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": body,
    }
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        choice = rng.randrange(12)
        if choice == 0:  # extra top-level keys, which OpenAI's own format does not have
            line[rng.choice(["tenant", "batch_id", "priority", "extra", "metadata"])] = rng.choice(
                ["acme", "b", {"x": 1}, 7]
            )
        elif choice == 1:
            key = rng.choice(list(line))
            line[key] = rng.choice([*NASTY_NUMBERS, *NASTY_TEXT, _deep(fuzz)])
        elif choice == 2:
            line["url"] = rng.choice(
                [*BATCH_URLS, "/v1/responses", "/v1/completions", "/v1/../admin", fuzz.url()]
            )
            if line["url"] == "/v1/embeddings":
                body.pop("messages", None)
                body["input"] = rng.choice(["text", ["a", "b"], [7], [], "x" * 3000])
        elif choice == 3:
            line["method"] = rng.choice(["GET", "post", "", None, "DELETE"])
        elif choice == 4:
            body[rng.choice(["functions", "stream", "audio", "unknown_field", "n", "seed"])] = (
                rng.choice([True, 1, "x", None, {}])
            )
        elif choice == 5:
            body["messages"] = [fuzz.message() for _ in range(rng.choice([1, 2]))]
        elif choice == 6:
            body["tools"] = fuzz.tools()
        elif choice == 7:
            body["response_format"] = fuzz.response_format()
        elif choice == 8:
            body["messages"] = _deep(fuzz)
        elif choice == 9:
            line["custom_id"] = rng.choice(
                ["", "a" * 129, "x y", "\u0000", "dup-1", "dup-1", 7, None, ["x"]]
            )
        elif choice == 10:
            body["model"] = rng.choice([*NASTY_TEXT, 7, None])
        else:
            line["body"] = rng.choice([None, [], "body", 7, _deep(fuzz)])
    text = fuzz.dumps(line)
    if rng.random() < 0.03:  # a huge line
        text = text[:-1] + ', "pad": "' + "p" * rng.choice([100_000, 2_000_000]) + '"}'
    if rng.random() < 0.03:
        text = rng.choice([text[: len(text) // 2], text + " trailing", "[1, 2]", "null", "\ufeff"])
    return text


def _deep(fuzz: Fuzz) -> str:
    """Nesting as deep as a writer likes (or unbalanced: near-JSON)."""
    depth = fuzz.rng.choice([50, 900, 20_000, 100_000])
    opening, closing = fuzz.rng.choice([("[", "]"), ('{"a": ', "}")])
    tail = closing * depth if fuzz.rng.random() < 0.9 else ""
    return fuzz.splice(opening * depth + "1" + tail)


def batch_file(fuzz: Fuzz, lines: int, prefix: str) -> list[str]:
    """A file of ``lines`` lines; some custom_ids repeat (OpenAI refuses such a file)."""
    texts = [batch_line(fuzz, f"{prefix}-{i}") for i in range(lines)]
    for _ in range(max(1, lines // 20)):
        if len(texts) > 1 and fuzz.rng.random() < 0.5:
            texts.append(texts[fuzz.rng.randrange(len(texts))])  # a duplicated line
    return texts


def control(
    fuzz: Fuzz, tenant: str, batch_id: str, secret: str | None
) -> tuple[bytes, list[Header]]:
    """A control command for ``tenant``'s ``batch_id`` (or its job ``j-1``): a ``cancel`` or a
    ``set_budget`` with hostile fields, as its value and headers. ``secret``: the tenant's, to
    sign some of them wrongly (never rightly)."""
    rng = fuzz.rng
    command: dict[str, Any] = rng.choice(
        [
            {"action": "cancel", "tenant": tenant, "batch_id": batch_id},
            {"action": "cancel", "tenant": tenant, "job_id": "j-1"},
            {
                "action": "set_budget",
                "tenant": tenant,
                "batch_id": batch_id,
                "budget_usd": 0,
                "at": "2026-01-01T00:00:00Z",
            },
        ]
    )
    for _ in range(rng.choice([1, 1, 2, 3])):
        choice = rng.randrange(8)
        if choice == 0:
            command["at"] = rng.choice(
                [
                    "9999-12-31T23:59:59Z",
                    "0001-01-01T00:00:00Z",
                    "2026-13-45T00:00:00Z",
                    "2026-01-01T00:00:00",
                    "2026-01-01T00:00:00+23:59",
                    "+275760-09-13T00:00:00Z",
                    "9999-12-31T23:59:59-23:59",
                    1e20,
                    253402300799,
                    "now",
                    None,
                    "",
                    "\u0000",
                ]
            )
        elif choice == 1:
            command["tenant"] = rng.choice([*NASTY_TEXT, "DEMO", "default", 7, None])
        elif choice == 2:
            command[rng.choice(["batch_id", "job_id"])] = rng.choice(
                [*NASTY_TEXT, "b" * 129, "[/x]", 7, None, batch_id]
            )
        elif choice == 3:
            command["budget_usd"] = rng.choice(
                [1e308, 1e9 + 1, -0.0, -1, 10**400, "1", True, None, 0.000000001]
            )
        elif choice == 4:
            command["action"] = rng.choice(["Cancel", "set_budget", "delete", "", None, 7])
        elif choice == 5:
            command[rng.choice(["extra", "signature", "reason"])] = "x"
        elif choice == 6:
            command = {
                "action": "cancel",
                "tenant": tenant,
                "batch_id": batch_id,
                "nested": _deep(fuzz),
            }
        else:
            command.pop(rng.choice(list(command)), None)
    text = fuzz.dumps(command)
    value = text.encode() if rng.random() > 0.05 else rng.choice([b"", b"\xff\xfe", b"null"])
    headers: list[Header] = []
    roll = rng.randrange(6)
    if roll == 0 and secret is not None:  # signed, but over other bytes
        headers.append((HEADER_SIGNATURE, sign(value + b" ", secret).encode()))
    elif roll == 1:
        headers.append(
            (
                HEADER_SIGNATURE,
                rng.choice(
                    [b"v1=" + b"0" * 64, b"v1=", b"", None, b"v2=abc", b"v1=" + b"f" * 100_000]
                ),
            )
        )
    elif roll == 2:
        headers.append((RawName(b"\xff" + HEADER_SIGNATURE.encode()), b"v1=00"))
    elif roll == 3:  # two signature headers
        headers += [(HEADER_SIGNATURE, b"v1=" + b"0" * 64), (HEADER_SIGNATURE, b"")]
    return value, headers
