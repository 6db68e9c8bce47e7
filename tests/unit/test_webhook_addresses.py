"""Where an alert webhook may go, on fakes: each refused range with its reason, IPv4 embedded in
IPv6 judged as IPv4, numeric spellings of an address, names left to delivery time; the pinned
transport sends the request to the checked address with the name kept in Host and SNI; the
signing headers follow Standard Webhooks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from workers.admission.webhooks.addresses import (
    AddressRefused,
    checked,
    literal_refusal,
    numeric_host,
    refusal,
)
from workers.admission.webhooks.posting import SIGNATURE_HEADER, signature, signed_headers
from workers.admission.webhooks.transport import ALLOW_PRIVATE, PinnedTransport


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.53", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("10.0.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.0.10", "private"),
        ("fd12::1", "private (unique-local)"),
        ("100.64.0.1", "shared (carrier-grade NAT)"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("239.1.1.1", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "reserved"),
    ],
)
def test_each_refused_range_is_named_in_the_reason(address: str, kind: str) -> None:
    article = "an" if kind[0] in "aeiou" else "a"
    assert refusal(address) == f"{address} is {article} {kind} address"


@pytest.mark.parametrize("address", ["::ffff:127.0.0.1", "64:ff9b::a9fe:a9fe", "2002:a00:1::1"])
def test_an_ipv4_address_inside_an_ipv6_one_is_judged_as_ipv4(address: str) -> None:
    reason = refusal(address)
    assert reason is not None and reason.startswith(f"{address} is a")
    assert " address (it embeds " in reason


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1::1", "172.32.0.1"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal(address) is None


def test_numeric_spellings_of_an_address_are_read_without_asking_dns() -> None:
    assert numeric_host("2130706433") == "127.0.0.1"
    assert numeric_host("0x7f.1") == "127.0.0.1"
    assert numeric_host("[::1]") == "::1"
    assert numeric_host("hooks.example.com") is None


def test_a_name_is_left_to_delivery_time_and_a_literal_checked_at_once() -> None:
    assert literal_refusal("https://hooks.example.com/x") is None
    assert literal_refusal("http://localhost/x") is None  # resolved, then checked, on delivery
    assert (
        literal_refusal("http://0x7f.1/x") == "0x7f.1 is 127.0.0.1: 127.0.0.1 is a loopback address"
    )


def test_every_resolved_address_is_checked() -> None:
    both = ["93.184.216.34", "2606:2800:220:1::1"]
    assert checked("h", both) == both
    with pytest.raises(AddressRefused, match=r"^h resolves to 10\.0\.0\.1, a private address; "):
        checked("h", ["93.184.216.34", "10.0.0.1"])
    with pytest.raises(httpx.ConnectError, match="resolves to no address"):
        checked("h", [])


class Inner(httpx.AsyncBaseTransport):
    """Records what would have been sent; ``unreachable`` addresses do not connect."""

    def __init__(self, *unreachable: str) -> None:
        self.sent: list[httpx.Request] = []
        self.unreachable = set(unreachable)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        if request.url.host in self.unreachable:
            raise httpx.ConnectError("no route to host")
        return httpx.Response(204)


def answering(*addresses: str) -> Callable[[str, int], Awaitable[list[str]]]:
    async def resolve(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolve


async def test_the_request_goes_to_the_checked_address_with_host_and_sni_kept() -> None:
    inner = Inner()
    transport = PinnedTransport(inner, answering("2606:2800:220:1::1"))
    async with httpx.AsyncClient(transport=transport) as client:
        await client.post("https://hooks.example.com:8443/h?x=1", content=b"{}")

    [sent] = inner.sent
    assert str(sent.url) == "https://[2606:2800:220:1::1]:8443/h?x=1"
    assert sent.headers["host"] == "hooks.example.com:8443"
    assert sent.extensions["sni_hostname"] == "hooks.example.com"  # and the certificate's name


async def test_a_refused_answer_sends_nothing_unless_the_request_is_allowed() -> None:
    inner = Inner()
    transport = PinnedTransport(inner, answering("10.1.1.1"))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(
            AddressRefused, match=r"^hooks\.internal resolves to 10\.1\.1\.1, a private"
        ):
            await client.post("http://hooks.internal/h", content=b"{}")
        assert inner.sent == []
        await client.post("http://hooks.internal/h", extensions={ALLOW_PRIVATE: True})

    [sent] = inner.sent
    assert sent.url.host == "10.1.1.1" and ALLOW_PRIVATE not in sent.extensions
    assert "sni_hostname" not in sent.extensions  # plain HTTP: no TLS


def test_the_signing_headers_follow_standard_webhooks_and_keep_the_old_one() -> None:
    body = b'{"a":1}'
    headers = signed_headers("alert-9", body, b"k", 1_765_000_000.7)
    assert headers["webhook-id"] == "alert-9" and headers["webhook-timestamp"] == "1765000000"
    version, _, _ = headers["webhook-signature"].partition(",")
    assert version == "v1" and headers[SIGNATURE_HEADER] == signature(b"k", body)
    unsigned = signed_headers("alert-9", body, None, 1_765_000_000.0)
    assert "webhook-signature" not in unsigned and SIGNATURE_HEADER not in unsigned
    at = datetime.fromtimestamp(1_765_000_000, UTC)
    assert headers["webhook-signature"] == Webhook(b"k").sign("alert-9", at, body.decode())


async def test_an_address_that_does_not_connect_is_followed_by_the_next_checked_one() -> None:
    inner = Inner("2606:2800:220:1::1")
    transport = PinnedTransport(inner, answering("2606:2800:220:1::1", "93.184.216.34"))
    async with httpx.AsyncClient(transport=transport) as client:
        answer = await client.post("https://hooks.example.com/h", content=b"{}")

    assert answer.status_code == 204
    assert [r.url.host for r in inner.sent] == ["2606:2800:220:1::1", "93.184.216.34"]
    unreached = PinnedTransport(Inner("93.184.216.34"), answering("93.184.216.34"))
    async with httpx.AsyncClient(transport=unreached) as client:
        with pytest.raises(httpx.ConnectError):
            await client.post("https://hooks.example.com/h", content=b"{}")
