"""Red-team specs on webhook addresses: IPv6 spellings that embed an IPv4 address reach it where
the network translates them — besides ``::ffff:a.b.c.d``, 6to4 and the well-known NAT64 prefix
(judged by the IPv4 address they embed), the local-use NAT64 prefix (RFC 8215,
``64:ff9b:1::/48``: the operator's own translator, which embeds the IPv4 address where its
prefix length says) and the deprecated IPv4-compatible ``::a.b.c.d`` are refused whole."""

from __future__ import annotations

import pytest

from workers.admission.webhooks.addresses import refusal


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("64:ff9b:1::a9fe:a9fe", "a local-use NAT64 address"),
        ("64:ff9b:1:7f:0:100::", "a local-use NAT64 address"),  # 127.0.0.1 under a /48
        ("::127.0.0.1", "a reserved (IPv4-compatible) address"),
        ("::169.254.169.254", "a reserved (IPv4-compatible) address"),
        ("::8.8.8.8", "a reserved (IPv4-compatible) address"),
    ],
)
def test_an_ipv6_address_a_translator_may_take_to_ipv4_is_refused(
    address: str, reason: str
) -> None:
    assert refusal(address) == f"{address} is {reason}"


def test_the_unspecified_loopback_and_public_addresses_keep_their_answers() -> None:
    assert refusal("64:ff9b::808:808") is None
    assert refusal("2606:4700:4700::1111") is None
    assert refusal("::") == ":: is an unspecified address"
    assert refusal("::1") == "::1 is a loopback address"
