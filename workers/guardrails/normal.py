"""Text as a guardrail should read it: one spelling for what looks the same.

Matching the raw text is easy to slip past: a newline or two spaces inside a blocked phrase,
zero-width characters inside a word, fullwidth letters, Cyrillic or Greek look-alikes.
:func:`folded` is what terms and the injection heuristic match against — NFKC (fullwidth and
compatibility forms to their plain letters), format characters removed (zero-width spaces and
joiners, soft hyphens, BOM), look-alike letters mapped to Latin, case folded, every run of
whitespace one space. It is for detection only; what is sent is the text itself, or, where PII
is redacted, :func:`plain`.
"""

from __future__ import annotations

import re
import unicodedata

# Cyrillic and Greek letters that look like Latin ones (lowercase; text is case-folded first)
_LOOKALIKES = str.maketrans(
    {
        "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o",
        "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j",
        "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ɡ": "g",
        "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o",
        "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ϲ": "c", "ϳ": "j",
    }
)  # fmt: skip
_WHITESPACE = re.compile(r"\s+")


def plain(text: str) -> str:
    """NFKC with format characters (zero-width, soft hyphen, BOM, bidi controls) removed:
    the same words, one encoding of them."""
    normal = unicodedata.normalize("NFKC", text)
    if normal.isascii():
        return normal
    return "".join(c for c in normal if unicodedata.category(c) != "Cf")


def folded(text: str) -> str:
    """:func:`plain`, case-folded, look-alikes mapped to Latin, whitespace runs one space."""
    return _WHITESPACE.sub(" ", plain(text).casefold().translate(_LOOKALIKES))
