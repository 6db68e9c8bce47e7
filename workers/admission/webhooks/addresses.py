"""Which addresses a tenant's alert webhook may reach: none on the worker's own machine or
network unless the operator allows it.

A tenant chooses its ``alert_webhook_url``; the worker POSTs to it from inside the operator's
network. So an address in a refused range — loopback, link-local (a cloud's metadata service is
169.254.169.254), private and unique-local, shared (carrier-grade NAT), unspecified, multicast,
reserved — is refused: a literal one when the worker loads the config (:func:`literal_refusal`),
a name when an alert is delivered, after resolving it — every address it resolves to is checked
and the connection goes to the checked address (``transport.py``), so a name that
resolves elsewhere a moment later (DNS rebinding) reaches nothing new. An IPv6 address that
embeds an IPv4 one (IPv4-mapped, 6to4, NAT64) is judged by the IPv4 address. A tenant's
``alert_webhook_allow_private = true``, or ``HEADWAY_WEBHOOK_ALLOW_PRIVATE`` for every tenant,
lets them through (a receiver inside the operator's network, a test's loopback server).
"""

from __future__ import annotations

import asyncio
import socket
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

import httpx

REFUSED = tuple(
    (ip_network(network), kind)
    for network, kind in (
        ("0.0.0.0/8", "unspecified"),
        ("127.0.0.0/8", "loopback"),
        ("10.0.0.0/8", "private"),
        ("172.16.0.0/12", "private"),
        ("192.168.0.0/16", "private"),
        ("100.64.0.0/10", "shared (carrier-grade NAT)"),
        ("169.254.0.0/16", "link-local"),
        ("192.0.0.0/24", "reserved"),
        ("198.18.0.0/15", "reserved"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "reserved (IPv4-compatible)"),  # ::a.b.c.d, deprecated: never a receiver
        ("64:ff9b:1::/48", "local-use NAT64"),  # RFC 8215: the operator's own translator
        ("fc00::/7", "private (unique-local)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    )
)
NAT64 = ip_network("64:ff9b::/96")
HOW_TO_ALLOW = (
    "webhooks to loopback, link-local, private, unspecified and multicast addresses are "
    "refused unless the operator allows them (alert_webhook_allow_private = true on the "
    "tenant, or HEADWAY_WEBHOOK_ALLOW_PRIVATE=true)"
)


class AddressRefused(Exception):
    """A webhook's host is, or resolves to, an address in a refused range."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _judged(address: IPv4Address | IPv6Address) -> IPv4Address | IPv6Address:
    """The address whose range decides: an IPv4 address embedded in an IPv6 one, or itself."""
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in NAT64:
            return IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def range_of(address: str) -> str | None:
    """The refused range the IP address ``address`` is in (``a loopback address``), or None
    when a webhook may reach it."""
    given = ip_address(address.split("%", 1)[0])  # an IPv6 zone is no part of the address
    judged = _judged(given)
    for network, kind in REFUSED:
        if judged.version == network.version and judged in network:
            article = "an" if kind[0] in "aeiou" else "a"
            embedded = "" if judged is given else f" (it embeds {judged})"
            return f"{article} {kind} address{embedded}"
    return None


def refusal(address: str) -> str | None:
    """Why the IP address ``address`` is refused (``127.0.0.1 is a loopback address``), or
    None when a webhook may reach it."""
    found = range_of(address)
    return None if found is None else f"{address} is {found}"


def numeric_host(host: str) -> str | None:
    """The IP address ``host`` spells, in any form the resolver takes without asking DNS
    (``127.0.0.1``, ``2130706433``, ``0x7f.1``, ``[::1]``), or None for a name."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), None, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError, ValueError):
        return None
    return str(infos[0][4][0]) if infos else None


def literal_refusal(url: str) -> str | None:
    """Why ``url``'s host, when it is a literal IP address, is refused — or None (a name is
    checked when an alert is delivered, after resolving it)."""
    try:
        host = httpx.URL(url).host
    except httpx.InvalidURL as error:
        return f"not a URL: {error}"
    address = numeric_host(host)
    if address is None:
        return None
    reason = refusal(address)
    if reason is not None and address != host:
        reason = f"{host} is {address}: {reason}"
    return reason


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (an IP literal: itself), in the resolver's order."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise httpx.ConnectError(f"{host} does not resolve: {error}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def checked(host: str, addresses: list[str]) -> list[str]:
    """``addresses``, once every one of them is allowed (a name resolving to one public and
    one private address is refused: which one a connection would get is not the worker's to
    choose)."""
    if not addresses:
        raise httpx.ConnectError(f"{host} resolves to no address")
    for address in addresses:
        found = range_of(address)
        if found is not None:
            said = (
                f"{address} is {found}"
                if address == host
                else (f"{host} resolves to {address}, {found}")
            )
            raise AddressRefused(f"{said}; {HOW_TO_ALLOW}")
    return addresses
