"""PII found by pattern and checksum, replaced by stable placeholders before the provider call.

Texts are made :func:`~workers.guardrails.normal.plain` first (NFKC, zero-width characters
removed), so fullwidth digits and ``＠``, NBSP and zero-width spaces inside a number do not hide
it; the provider receives that plain text.

Kinds (config names): ``email``, ``phone``, ``card`` (13–19 digits passing the Luhn check,
grouped by spaces, dashes or dots), ``iban`` (ISO 13616 mod-97 check, either case), ``ssn``
(US, valid area/group/serial), ``ip`` (IPv4 and IPv6, checked by :mod:`ipaddress`),
``secret`` (API-key-like tokens: ``sk-…``, ``AKIA…``, ``ghp_…``, Slack ``xox?-…``, JWTs,
``Bearer …``, ``key=…``/``token: …`` assignments).

A placeholder is ``[KIND_N]``: the same value gets the same placeholder everywhere in one job
(so the model can still tell "the same address" apart from "another one"), and the mapping
lives only with that job — restoring an output uses the job's own mapping and nothing else.
Overlapping findings are resolved by kind order (a card number is not also a phone number).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum


class PiiKind(StrEnum):
    SECRET = "secret"
    EMAIL = "email"
    IBAN = "iban"
    CARD = "card"
    SSN = "ssn"
    IP = "ip"
    PHONE = "phone"


_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+@\w(?:[\w-]*\w)?(?:\.[\w-]+)*\.[^\W\d_]{2,}(?![\w-])")
_CARD = re.compile(
    r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])"
    r"|(?<![\d.])\d{4}\.\d{4}\.\d{4}\.\d{1,7}(?![\d.])"  # grouped by dots
)
_IBAN = re.compile(
    r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"
    # lowercase: compact, or in the printed groups of four (a lowercase word is not eaten)
    r"|\b[a-z]{2}\d{2}(?:[a-z0-9]{11,30}|(?: [a-z0-9]{4}){2,7}(?: [a-z0-9]{1,4})?)\b"
)
_SSN = re.compile(r"(?<![\d-])(\d{3})-(\d{2})-(\d{4})(?![\d-])")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Fa-f:])")
_PHONE = re.compile(
    r"(?<![\w+-])(?<!\d[ .])\+?(?:\(\d{1,4}\)[ .-]?)?\d(?:[ .-]?\(?\d\)?){6,14}(?![\w-])(?![ .]\d)"
)
_SSN_SHAPE = re.compile(r"\d{3}-\d{2}-\d{4}")
_SECRET = re.compile(
    r"\b(?:sk-(?:ant-|proj-)?[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})\b"  # a JWT
    r"|(?i:\bbearer\s+)[A-Za-z0-9._~+/-]{16,}=*"
    r"|(?i:(?<=api_key=)|(?<=api-key=)|(?<=apikey=)|(?<=token=)|(?<=secret=)|(?<=password=))"
    r"[^\s\"'&,;]{8,}"
)


def luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    number = "".join(str(int(char, 36)) for char in moved)
    return int(number) % 97 == 1


def _card(match: re.Match[str]) -> bool:
    digits = re.sub(r"\D", "", match.group())
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


def _ssn(match: re.Match[str]) -> bool:
    area, group, serial = match.groups()
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _ip(match: re.Match[str]) -> bool:
    try:
        ipaddress.ip_address(match.group())
    except ValueError:
        return False
    return True


def _phone(match: re.Match[str]) -> bool:
    text = match.group()
    return 9 <= len(re.sub(r"\D", "", text)) <= 15 and not _SSN_SHAPE.fullmatch(text)


def _always(_: re.Match[str]) -> bool:
    return True


_DETECTORS: dict[PiiKind, list[tuple[re.Pattern[str], Callable[[re.Match[str]], bool]]]] = {
    PiiKind.SECRET: [(_SECRET, _always)],
    PiiKind.EMAIL: [(_EMAIL, _always)],
    PiiKind.IBAN: [(_IBAN, lambda m: iban_ok(m.group()))],
    PiiKind.CARD: [(_CARD, _card)],
    PiiKind.SSN: [(_SSN, _ssn)],
    PiiKind.IP: [(_IPV4, _ip), (_IPV6, _ip)],
    PiiKind.PHONE: [(_PHONE, _phone)],
}
ORDER = list(PiiKind)  # earlier kinds win overlaps


@dataclass(frozen=True, slots=True)
class Finding:
    kind: PiiKind
    start: int
    end: int


def find(text: str, kinds: Iterable[PiiKind]) -> list[Finding]:
    """Non-overlapping findings of ``kinds`` in ``text``, in text order."""
    wanted = set(kinds)
    taken: list[Finding] = []
    for kind in ORDER:
        if kind not in wanted:
            continue
        for pattern, valid in _DETECTORS[kind]:
            for match in pattern.finditer(text):
                start, end = match.span()
                if valid(match) and not any(f.start < end and start < f.end for f in taken):
                    taken.append(Finding(kind, start, end))
    return sorted(taken, key=lambda f: f.start)


_PLACEHOLDER = re.compile(r"\[(?:SECRET|EMAIL|IBAN|CARD|SSN|IP|PHONE)_\d+\]")


@dataclass(slots=True)
class Redaction:
    """One job's placeholders: value → placeholder, and back."""

    kinds: frozenset[PiiKind]
    by_value: dict[str, str] = field(default_factory=dict)
    counts: dict[PiiKind, int] = field(default_factory=dict)

    def redact(self, text: str) -> str:
        findings = find(text, self.kinds)
        if not findings:
            return text
        out, last = [], 0
        for finding in findings:
            value = text[finding.start : finding.end]
            out.append(text[last : finding.start])
            out.append(self._placeholder(finding.kind, value))
            last = finding.end
        out.append(text[last:])
        return "".join(out)

    def _placeholder(self, kind: PiiKind, value: str) -> str:
        known = self.by_value.get(value)
        if known is not None:
            return known
        number = self.counts.get(kind, 0) + 1
        self.counts[kind] = number
        placeholder = self.by_value[value] = f"[{kind.value.upper()}_{number}]"
        return placeholder

    @property
    def found(self) -> int:
        return len(self.by_value)

    def restore(self, text: str) -> str:
        """Put this job's values back where its placeholders are (others are left alone)."""
        if not self.by_value:
            return text
        back = {placeholder: value for value, placeholder in self.by_value.items()}
        return _PLACEHOLDER.sub(lambda m: back.get(m.group(), m.group()), text)
