"""How many SMS parts (segments) a text needs, counted as GSM 03.38 / 03.40 do.

A text made only of the GSM 7-bit default alphabet (basic table plus the extension table) is sent as GSM7:
a basic character costs one septet, an extension character (form feed, ``^ { } \\ [ ~ ] | €``) costs two
(escape + character). One SMS carries 160 septets; a concatenated part carries 153 (the UDH takes the rest),
and an escape pair is never split: when only one septet is left in a part, the pair opens the next part.
Any other text is sent as UCS-2 and counted in UTF-16 code units: 70 for one SMS, 67 per concatenated part;
a character outside the BMP (most emoji) is a surrogate pair of two units and moves whole to the next part.
Parts are filled greedily, so `count(t).parts == len(split(t))` and `"".join(split(t)) == t` always hold.
The empty text is one GSM7 part of zero units.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable, Iterator
from typing import NamedTuple

__all__ = [
    "GSM7_PART",
    "GSM7_SINGLE",
    "UCS2_PART",
    "UCS2_SINGLE",
    "Encoding",
    "Segments",
    "count",
    "split",
]

GSM7_SINGLE = 160
GSM7_PART = 153
UCS2_SINGLE = 70
UCS2_PART = 67


class Encoding(enum.StrEnum):
    GSM7 = "gsm7"
    UCS2 = "ucs2"


class Segments(NamedTuple):
    encoding: Encoding
    parts: int
    units: int  # septets for GSM7, UTF-16 code units for UCS2


# GSM 03.38 basic table, 0x00-0x7F in order, without 0x1B (the escape to the extension table).
_BASIC_CHARS = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
_EXTENSION_CHARS = "\f^{}\\[~]|€"

_BASIC = frozenset(_BASIC_CHARS)
_EXTENSION = frozenset(_EXTENSION_CHARS)
_GSM = _BASIC | _EXTENSION
_DROP_BASIC = dict.fromkeys(map(ord, _BASIC_CHARS))  # str.translate table: keeps only non-basic chars
_LIMITS = {Encoding.GSM7: (GSM7_SINGLE, GSM7_PART), Encoding.UCS2: (UCS2_SINGLE, UCS2_PART)}


def count(text: str) -> Segments:
    """The encoding, number of parts and total units (septets or UTF-16 code units) of `text`."""
    n = len(text)
    if _BASIC.issuperset(text):
        encoding, units = Encoding.GSM7, n
    elif _GSM.issuperset(text):
        encoding, units = Encoding.GSM7, n + len(text.translate(_DROP_BASIC))
    else:
        encoding, units = Encoding.UCS2, len(text.encode("utf-16-le", "surrogatepass")) // 2
    single, part = _LIMITS[encoding]
    if units <= single:
        parts = 1
    elif units == n:  # every character is one unit: nothing can move across a boundary
        parts = -(-units // part)
    else:
        parts = len(_part_starts(_widths(text, encoding), part))
    return Segments(encoding, parts, units)


def split(text: str) -> list[str]:
    """The texts of the parts `text` is sent as; they join back to `text`."""
    segments = count(text)
    if segments.parts == 1:
        return [text]
    starts = _part_starts(_widths(text, segments.encoding), _LIMITS[segments.encoding][1])
    return [text[a:b] for a, b in itertools.pairwise([*starts, len(text)])]


def _widths(text: str, encoding: Encoding) -> Iterator[int]:
    if encoding is Encoding.GSM7:
        return (2 if ch in _EXTENSION else 1 for ch in text)
    return (2 if ch > "\uffff" else 1 for ch in text)


def _part_starts(widths: Iterable[int], limit: int) -> list[int]:
    """Character index where each part begins, filling every part greedily up to `limit` units."""
    starts = [0]
    used = 0
    for i, width in enumerate(widths):
        if used + width > limit:
            starts.append(i)
            used = 0
        used += width
    return starts
