"""`plain_json`: where it holds, msgspec's checks of a line are orjson's, and the line screen
may leave simdjson's validation out (`engine.cohort.line_screen`).

msgspec, decoding a line into a Struct of a few fields, checks the rest as JSON syntax and
skips it; orjson rejects two things such a skip lets through: invalid UTF-8 and a number
that overflows a double ("number is infinity when parsed as double"). The property: a text
msgspec decodes that `plain_json` finds plain is one orjson parses, whatever its numbers
(any length of integer part, fraction and exponent), strings (hexadecimal ids, dates, free
text with exponent-like words, non-ASCII, invalid UTF-8, escapes and lone surrogates) and
nesting.
"""

from __future__ import annotations

import msgspec
import orjson
import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from engine.cohort import line_screen
from engine.cohort.line_screen import line_validator, plain_json


class _Skipping(msgspec.Struct):
    """Reads `id` alone: every other value is skipped, as the screen's Structs skip them."""

    id: str = ""


_decode = msgspec.json.Decoder(_Skipping).decode


def _decodes(text: bytes) -> bool:
    try:
        _decode(text)
    except msgspec.DecodeError:
        return False
    return True


def _orjson_accepts(text: bytes) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


_integer_parts = st.one_of(
    st.just("0"),
    st.builds(
        lambda head, rest: head + rest,
        st.sampled_from("123456789"),
        # around the lengths that matter: 64-bit integers, 209-210 digits with an exponent
        # of two, 309-310 without
        st.sampled_from((0, 1, 18, 19, 20, 207, 208, 209, 210, 307, 308, 309, 400)).flatmap(
            lambda length: st.text("0123456789", min_size=length, max_size=length)
        ),
    ),
)
_numbers = st.builds(
    lambda sign, integer, fraction, exponent: (sign + integer + fraction + exponent).encode(),
    st.sampled_from(("", "-")),
    _integer_parts,
    st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=320).map(".".__add__)),
    st.one_of(
        st.just(""),
        st.builds(
            lambda letter, sign, zeros, value: letter + sign + "0" * zeros + str(value),
            st.sampled_from("eE"),
            st.sampled_from(("", "+", "-")),
            st.integers(0, 2),
            st.one_of(st.integers(0, 120), st.integers(95, 330), st.integers(0, 99999)),
        ),
    ),
)
"""JSON numbers of every shape, from 0 to integer parts of 420 digits and 6-digit exponents."""

_string_bodies = st.one_of(
    st.text("0123456789abcdef-", max_size=40),  # ids: "5e1234ab", "1e400-..."
    st.text("0123456789eE+-., ]}", max_size=20),  # free text that looks like numbers
    st.text(max_size=10).map(lambda text: text.replace("\\", "").replace('"', "")),
    st.sampled_from(("\\ud800", "\\udc00x", "\\u00e9", "\\n", "\\\\", '\\"')),
)
_strings = st.one_of(
    _string_bodies.map(lambda body: b'"' + body.encode("utf-8", "surrogatepass") + b'"'),
    st.binary(max_size=6).map(lambda raw: b'"' + raw.replace(b'"', b"").replace(b"\\", b"") + b'"'),
)
_values = st.recursive(
    st.one_of(_numbers, _strings, st.sampled_from((b"true", b"false", b"null"))),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda items: b"[" + b",".join(items) + b"]"),
        st.lists(st.tuples(_strings, inner), max_size=4).map(
            lambda pairs: b"{" + b",".join(key + b":" + value for key, value in pairs) + b"}"
        ),
    ),
    max_leaves=8,
)
_spaces = st.sampled_from((b"", b" ", b"\n", b"\t", b"\r\n"))


@st.composite
def _lines(draw: st.DrawFn) -> bytes:
    pairs = draw(st.lists(st.tuples(_strings, _values), max_size=5))
    space = draw(_spaces)
    members = [key + b":" + space + value + space for key, value in pairs]
    return b"{" + b",".join(members) + b"}" + draw(_spaces)


@settings(max_examples=1500)
@given(text=_lines())
@example(text=b'{"count":1e400}')
@example(text=b'{"count":-2e999,"id":"x"}')
@example(text=b'{"a":[1E+308 ]}')
@example(text=b'{"a":' + b"9" * 310 + b"}")
@example(text=b'{"a":' + b"1" + b"0" * 215 + b"e99}")
@example(text=b'{"a":"\xed\xa0\x80"}')
@example(text=b'{"a":"\xc0\xaf"}')
def test_a_plain_text_msgspec_decodes_is_one_orjson_parses(text: bytes) -> None:
    if not _decodes(text):
        return
    accepted = _orjson_accepts(text)
    event("orjson accepts" if accepted else "orjson rejects")  # both, in the statistics
    if plain_json(text):
        assert accepted, text
    validate = line_validator((text, b'{"a":1}\n'))  # as a run of the patient's
    if validate is not None:
        try:
            validate(text)
        except (ValueError, RuntimeError):
            return
    assert accepted, text


@pytest.mark.parametrize(
    "text",
    [
        b'{"count":1e400}',
        b'{"count":1E-400,"id":"x"}',
        b'{"a":[0.5e+1000]}',
        b'{"a":' + b"9" * 210 + b"}",
        b'{"a":1}\n{"a":2e308}\n{"a":3}\n',  # one line of a run
    ],
)
def test_what_could_overflow_is_not_plain(text: bytes) -> None:
    assert not plain_json(text)
    validate = line_validator((b'{"a":1}\n', text))
    assert validate is not None
    with pytest.raises(ValueError):
        validate(b'{"a":"\xc0\xaf"}')
    with pytest.raises(ValueError):  # every line of the patient's: even an ASCII one
        validate(b'{"count":1e400}')


def test_lines_not_ascii_are_validated_by_simdjson() -> None:
    """A run with non-ASCII text (valid or not) has those lines validated, and only them."""
    assert not plain_json(b'{"note":"caf\xc3\xa9"}')
    validate = line_validator((b'{"a":1}\n', b'{"note":"caf\xc3\xa9"}\n'))
    assert validate is not None
    validate(b'{"note":"caf\xc3\xa9"}')
    with pytest.raises(ValueError):
        validate(b'{"note":"\xed\xa0\x80"}')  # a surrogate encoded: invalid UTF-8
    validate(b'{"a":1,')  # ASCII: msgspec's checks are orjson's, simdjson is not asked


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b'{"a":1e99,"b":' + b"9" * 209 + b"}",  # finite: 209 digits times 1e99 < 1.8e308
        b'{"id":"5e1234ab-1e400-2e999","valueQuantity":{"value":12.345,"unit":"mg/dL"}}',
        b'{"effectiveDateTime":"2019-05-01T10:00:00+01:00","rank":-3}\n{"a":[1,2e10]}\n',
    ],
)
def test_ids_dates_and_ordinary_numbers_are_plain(text: bytes) -> None:
    assert plain_json(text)
    assert line_validator((text, b'{"a":1}\n')) is None


def test_a_synthea_run_is_plain() -> None:
    """The shipped Synthea examples hold no number near overflowing, but some non-ASCII
    text: most of their lines, and all of a run of Observations, are plain."""
    observation = (
        b'{"resourceType":"Observation","id":"8f0d3e4e-1e20-4b4c-9e0a-3c1e3e123456",'
        b'"status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8302-2",'
        b'"display":"Body Height"}]},"subject":{"reference":"Patient/p1"},'
        b'"effectiveDateTime":"2019-05-01T10:00:00+00:00",'
        b'"valueQuantity":{"value":172.4,"unit":"cm","system":"http://unitsofmeasure.org"}}\n'
    )
    assert plain_json(observation * 40)


def test_without_hyperscan_every_line_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where Hyperscan cannot run (its patterns do not compile on the processor), nothing is
    plain: simdjson validates every line, as before the search."""
    monkeypatch.setattr(line_screen, "_OVERFLOW", None)
    assert not plain_json(b'{"a":1}')
    validate = line_validator((b'{"a":1}\n',))
    assert validate is not None
    with pytest.raises(ValueError):
        validate(b'{"count":1e400}')
