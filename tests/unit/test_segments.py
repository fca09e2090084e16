"""SMS part counting (smsfleet.segments): GSM 03.38 septets, UCS-2 code units and the part boundaries."""

from __future__ import annotations

import itertools
import random

import pytest

from smsfleet.segments import Encoding, Segments, count, split

GSM7 = Encoding.GSM7
UCS2 = Encoding.UCS2
EXTENSION = "\f^{}\\[~]|€"
BASIC_NON_ASCII = "£¥èéùìòÇØøÅåΔΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà"
LIMITS = {GSM7: (160, 153), UCS2: (70, 67)}
EURO = "€"
EMOJI = "😀"  # U+1F600, outside the BMP: a surrogate pair in UTF-16
D = "д"  # Cyrillic, forces UCS-2

CASES = [
    pytest.param("", GSM7, 1, 0, id="empty"),
    pytest.param("Hello, world!", GSM7, 1, 13, id="plain-latin"),
    pytest.param("@$_\n\r", GSM7, 1, 5, id="basic-controls"),
    pytest.param(BASIC_NON_ASCII, GSM7, 1, len(BASIC_NON_ASCII), id="basic-non-ascii"),
    pytest.param("Привет", UCS2, 1, 6, id="cyrillic"),
    pytest.param("Code 4821, Анна", UCS2, 1, 15, id="latin-plus-one-cyrillic"),
    pytest.param("hi " + EMOJI, UCS2, 1, 5, id="emoji"),
    pytest.param(EMOJI * 35, UCS2, 1, 70, id="35-emoji-single"),
    pytest.param(EMOJI * 36, UCS2, 2, 72, id="36-emoji-two-parts"),
    pytest.param("ç", UCS2, 1, 1, id="lowercase-c-cedilla-not-gsm"),
    pytest.param("`", UCS2, 1, 1, id="backtick-not-gsm"),
    pytest.param("\x1b", UCS2, 1, 1, id="bare-escape-not-gsm"),
    *(pytest.param("x" + ch, GSM7, 1, 3, id=f"extension-{ord(ch):04x}") for ch in EXTENSION),
    pytest.param(EXTENSION, GSM7, 1, 20, id="all-extension"),
    # GSM7 boundaries
    pytest.param("a" * 160, GSM7, 1, 160, id="gsm-160"),
    pytest.param("a" * 161, GSM7, 2, 161, id="gsm-161"),
    pytest.param("a" * 306, GSM7, 2, 306, id="gsm-306"),
    pytest.param("a" * 307, GSM7, 3, 307, id="gsm-307"),
    pytest.param("a" * 158 + EURO, GSM7, 1, 160, id="gsm-euro-ends-at-160"),
    pytest.param("a" * 159 + EURO, GSM7, 2, 161, id="gsm-euro-past-160"),
    pytest.param(EURO * 80, GSM7, 1, 160, id="gsm-80-euros"),
    pytest.param(EURO * 81, GSM7, 2, 162, id="gsm-81-euros"),  # 76 euros (152 septets) fill a part
    pytest.param(EURO * 153, GSM7, 3, 306, id="gsm-153-euros"),  # 306 septets, but 76 + 76 + 1 euros
    # the escape pair would straddle septet 153: same 306 septets, one part more
    pytest.param("a" * 151 + EURO + "a" * 153, GSM7, 2, 306, id="gsm-euro-fits-153"),
    pytest.param("a" * 152 + EURO + "a" * 152, GSM7, 3, 306, id="gsm-euro-straddles-153"),
    # UCS2 boundaries
    pytest.param(D * 70, UCS2, 1, 70, id="ucs2-70"),
    pytest.param(D * 71, UCS2, 2, 71, id="ucs2-71"),
    pytest.param(D * 134, UCS2, 2, 134, id="ucs2-134"),
    pytest.param(D * 135, UCS2, 3, 135, id="ucs2-135"),
    pytest.param("a" * 69 + D, UCS2, 1, 70, id="ucs2-latin-69-plus-cyrillic"),
    pytest.param("a" * 160 + D, UCS2, 3, 161, id="ucs2-gsm-160-plus-cyrillic"),
    # the surrogate pair would straddle unit 67: same 134 units, one part more
    pytest.param(D * 65 + EMOJI + D * 67, UCS2, 2, 134, id="ucs2-emoji-fits-67"),
    pytest.param(D * 66 + EMOJI + D * 66, UCS2, 3, 134, id="ucs2-emoji-straddles-67"),
]


def units_of(part: str, encoding: Encoding) -> int:
    """Units counted independently of the module under test."""
    if encoding is GSM7:
        return len(part) + sum(part.count(ch) for ch in EXTENSION)
    return len(part.encode("utf-16-le")) // 2


@pytest.mark.parametrize(("text", "encoding", "parts", "units"), CASES)
def test_count(text: str, encoding: Encoding, parts: int, units: int) -> None:
    assert count(text) == Segments(encoding, parts, units)


@pytest.mark.parametrize(("text", "encoding", "parts", "units"), CASES)
def test_split_round_trips_within_limits(text: str, encoding: Encoding, parts: int, units: int) -> None:
    got = split(text)
    assert "".join(got) == text
    assert len(got) == parts
    assert sum(units_of(p, encoding) for p in got) == units
    single, part = LIMITS[encoding]
    limit = single if parts == 1 else part
    assert all(units_of(p, encoding) <= limit for p in got)
    if text:
        assert all(got)


def test_split_moves_escape_pair_to_next_part() -> None:
    assert split("a" * 152 + EURO + "a" * 152) == ["a" * 152, EURO + "a" * 151, "a"]
    assert split("a" * 151 + EURO + "a" * 153) == ["a" * 151 + EURO, "a" * 153]


def test_split_moves_surrogate_pair_to_next_part() -> None:
    assert split(D * 66 + EMOJI + D * 66) == [D * 66, EMOJI + D * 65, D]
    assert split(D * 65 + EMOJI + D * 67) == [D * 65 + EMOJI, D * 67]


def test_split_plain_gsm_in_153_septet_parts() -> None:
    assert [len(p) for p in split("a" * 307)] == [153, 153, 1]


def test_split_empty_text_is_one_empty_part() -> None:
    assert split("") == [""]


def test_types() -> None:
    assert Encoding.GSM7 == "gsm7"
    assert Encoding.UCS2 == "ucs2"
    assert count("x")._asdict() == {"encoding": GSM7, "parts": 1, "units": 1}


ALPHABETS = {
    "gsm-basic": "abc XYZ 019 .,!?@£$_\nΔΩÄöñ",
    "gsm-extended": "ab c.!" + EXTENSION,
    "cyrillic": "абв где ЖЗИ 12 .,",
    "emoji": "ab д " + EMOJI + "🎉👍",
}


def test_generated_texts_agree_with_split() -> None:
    rng = random.Random(20240531)
    for _ in range(400):
        alphabet = ALPHABETS[rng.choice(sorted(ALPHABETS))]
        length = rng.choice([rng.randrange(0, 80), rng.randrange(60, 500)])
        text = "".join(rng.choice(alphabet) for _ in range(length))
        seg = count(text)
        parts = split(text)
        assert seg.parts == len(parts), text
        assert "".join(parts) == text
        assert sum(units_of(p, seg.encoding) for p in parts) == seg.units
        single, part = LIMITS[seg.encoding]
        if seg.parts == 1:
            assert seg.units <= single
            continue
        assert seg.units > single
        widths = [units_of(p, seg.encoding) for p in parts]
        assert max(widths) <= part
        # greedy: every full part leaves no room for the first character of the next one
        for this, nxt in itertools.pairwise(parts):
            assert units_of(this, seg.encoding) + units_of(nxt[0], seg.encoding) > part
