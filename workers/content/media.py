"""Images and documents sent inline: their sizes, dimensions and token estimates.

Token estimates are made before a call (quotas, budgets, cost limits, the batch lane's
limits) and settle on the provider's reported usage afterwards, so they lean high:

- an image counts as the most any provider type charges for it — OpenAI's tiles (``low``: 85;
  otherwise the image is fitted into 2048 × 2048, its short side scaled to 768, and each
  512-px tile costs 170 plus 85 a picture), Anthropic's ``w × h / 750`` after fitting into
  1568 px, or Gemini's (258 for an image within 384 × 384, else 258 a 768-px tile; Gemini 3's
  default high resolution, 1,120 an image) — with its dimensions read from the first bytes of
  a ``data:`` URL (PNG, GIF, WebP, JPEG headers; nothing is decoded). ``detail`` lowers only
  OpenAI's figure: the others do not honour it. An https URL, whose size is unknown until the
  provider fetches it (only OpenAI and Anthropic types take one), counts as
  :data:`UNKNOWN_IMAGE_TOKENS`, the most either charges for any image.
- a document counts :data:`PDF_PAGE_TOKENS` a page (Anthropic's published upper figure for a
  page's text and image), pages counted from a PDF's ``/Type /Page`` objects; any other file
  counts its bytes / 4.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import struct
from dataclasses import dataclass

from schemas.content import DATA_URL

LOW_DETAIL_TOKENS = 85
TILE_TOKENS = 170
UNKNOWN_IMAGE_TOKENS = 1_600  # the most one image by URL costs on OpenAI or Anthropic types
GEMINI_TILE_TOKENS = 258
GEMINI_IMAGE_TOKENS = 1_120  # Gemini 3, media resolution high (its default for images)
PDF_PAGE_TOKENS = 3_000
#: how much of a data URL is decoded to find an image's dimensions (JPEG headers may follow
#: EXIF blocks of tens of KB)
HEADER_BYTES = 96 * 1024
PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")


@dataclass(frozen=True, slots=True)
class Inline:
    """A ``data:`` URL's MIME type and the size of what it carries."""

    mime: str
    size: int  # decoded bytes
    payload: str  # the base64 text


def inline(url: str) -> Inline | None:
    """The data a ``data:…;base64,`` URL carries, or None for any other URL."""
    match = DATA_URL.match(url)
    if match is None:
        return None
    payload = url[match.end() :]
    padding = len(payload) - len(payload.rstrip("="))
    return Inline(match.group(1).lower(), len(payload) * 3 // 4 - padding, payload)


def _head(payload: str) -> bytes:
    text = payload[: HEADER_BYTES // 3 * 4]
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return b""


def dimensions(data: bytes) -> tuple[int, int] | None:
    """(width, height) from an image file's first bytes: PNG, GIF, WebP or JPEG; else None."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return width, height
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        return _webp(data)
    if data[:2] == b"\xff\xd8":
        return _jpeg(data)
    return None


def _webp(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    return None


def _jpeg(data: bytes) -> tuple[int, int] | None:
    position = 2
    while position + 9 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            position += 2
            continue
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start of frame
            height, width = struct.unpack(">HH", data[position + 5 : position + 9])
            return width, height
        position += 2 + length
    return None


def image_tokens(size: tuple[int, int] | None, detail: str | None) -> int:
    """The most any adapted provider type charges for an image of this size."""
    if size is None:
        return UNKNOWN_IMAGE_TOKENS
    width, height = size
    if width <= 0 or height <= 0:
        return UNKNOWN_IMAGE_TOKENS
    return max(
        _openai_tokens(width, height, detail),
        _anthropic_tokens(width, height),
        _gemini_tokens(width, height),
    )


def _openai_tokens(width: int, height: int, detail: str | None) -> int:
    if detail == "low":
        return LOW_DETAIL_TOKENS
    scale = min(1.0, 2048 / max(width, height))
    fitted = (width * scale, height * scale)
    scale = min(1.0, 768 / min(fitted))
    tiles = math.ceil(fitted[0] * scale / 512) * math.ceil(fitted[1] * scale / 512)
    return LOW_DETAIL_TOKENS + TILE_TOKENS * tiles


def _anthropic_tokens(width: int, height: int) -> int:
    scale = min(1.0, 1568 / max(width, height))
    return math.ceil(width * scale * height * scale / 750)


def _gemini_tokens(width: int, height: int) -> int:
    if width <= 384 and height <= 384:
        return GEMINI_TILE_TOKENS
    tiles = math.ceil(width / 768) * math.ceil(height / 768)
    return max(GEMINI_IMAGE_TOKENS, GEMINI_TILE_TOKENS * tiles)


def url_image_tokens(url: str, detail: str | None) -> int:
    data = inline(url)
    if data is None:
        return UNKNOWN_IMAGE_TOKENS
    return image_tokens(dimensions(_head(data.payload)), detail)


def pdf_pages(data: bytes) -> int:
    """Pages of a PDF, counted from its page objects (at least one)."""
    return max(1, len(PAGE.findall(data)))


def file_tokens(file_data: str) -> int:
    data = inline(file_data)
    if data is None:
        return UNKNOWN_IMAGE_TOKENS
    if data.mime == "application/pdf":
        try:
            raw = base64.b64decode(data.payload)
        except (binascii.Error, ValueError):
            return max(1, data.size // 4)
        return pdf_pages(raw) * PDF_PAGE_TOKENS
    return max(1, data.size // 4)
