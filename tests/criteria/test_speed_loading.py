"""The fast loading paths give what the slow ones gave: YAML trees, UCUM checks, cached loads."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ucumvert import get_ucum_parser, parse_ucum

from engine.criteria.loader import load_criteria
from engine.normalise import load_terminology
from engine.normalise.units import _ucum_syntax_problem
from engine.normalise.yaml_reading import YamlLimitError, load_round_trip
from engine.trial import load_trial

ROOT = Path(__file__).resolve().parents[2]
CRITERIA = ROOT / "criteria" / "NCT05315778.yaml"

TRICKY_YAML = [
    "a: !foo bar\nb: !!str 1\nc: !%41x y\n",
    "a: >\n  x\n  y\n\n  z\nb: |\n  q\n  # not a comment\nc: >-\n  b\n   c\n  d\n",
    "a: &x {b: 1}\nc:\n  <<: *x\n  d: 2\n",
    "a: 2026-01-01\nb: 0o17\nc: 017\nd: 1_000\ne: .5\nf: yes\ng: ~\nh: 007\n",
    "- a # comment\n# comment\n- b\n\n\n- [1, 2, # comment\n 3]\n",
    "a:\n  - x: 1\n    # comment\n    y: 2\n",
    "%YAML 1.1\n---\na: yes\n",
    "\ufeffa: 1\r\nb: 'two'\r\n",
]


def _shape(node: Any, path: tuple[Any, ...] = ()) -> list[Any]:
    """Every node's type, value, width, tag and line/column, for comparing two trees."""
    tag = getattr(getattr(node, "tag", None), "value", None)
    value = None if isinstance(node, dict | list) else repr(node)
    shape: list[Any] = [(path, type(node).__name__, value, getattr(node, "_width", None), tag)]
    if isinstance(node, CommentedMap):
        shape.append((path, node.lc.line, node.lc.col))
        for key, child in node.items():
            try:
                shape.append((path, repr(key), node.lc.key(key), node.lc.value(key)))
            except KeyError:
                shape.append((path, repr(key), None))
            shape.extend(_shape(child, (*path, repr(key))))
    elif isinstance(node, CommentedSeq):
        shape.append((path, node.lc.line, node.lc.col))
        for index, child in enumerate(node):
            shape.append((path, index, node.lc.item(index)))
            shape.extend(_shape(child, (*path, index)))
    return shape


def _never() -> Any:
    raise AssertionError("the fast path failed")


@pytest.mark.parametrize(
    "text",
    [
        *TRICKY_YAML,
        *(path.read_text(encoding="utf-8") for path in sorted(ROOT.glob("mappings/*.yaml"))),
        CRITERIA.read_text(encoding="utf-8"),
    ],
)
def test_fast_yaml_reads_the_same_tree_as_the_round_trip_loader(text: str) -> None:
    expected = YAML(typ="rt").load(text)
    assert _shape(load_round_trip(text, _never)) == _shape(expected)


@pytest.mark.parametrize(
    "text", ["a: #]\nb: 1\n", "a:   # note\nb: 1\n", '!!int "-1": #]\nb: 1\n', "a: #\n"]
)
def test_an_empty_value_before_a_comment_is_marked_where_ruamel_marks_it(text: str) -> None:
    """ruamel's round-trip parser marks the empty value at its key's colon when a comment
    follows (found by the property test below: the parser without comment tokens marked it
    where the next line starts)."""

    def ruamel() -> Any:
        return YAML(typ="rt").load(text)

    assert _shape(load_round_trip(text, ruamel)) == _shape(ruamel())


@pytest.mark.parametrize("text", ["a: [1, 2\n", "a: 1\na: 2\n", "a:\n\t- b\n", "a: *missing\n"])
def test_broken_yaml_is_read_by_the_fallback(text: str) -> None:
    assert load_round_trip(text, lambda: "fallback") == "fallback"


@pytest.mark.parametrize(
    "unit",
    [
        "g/dL",
        "10*9/L",
        "umol/L",
        "%",
        "mm[Hg]",
        "[IU]/mL",
        "kg/m2",
        "/uL",
        "g/l",
        "{INR}",
        "G/L",
        "mg/dl",
        "mmHg",
        "10^9/L",
        "m/",
        "",
        "g//L",
        "1/",
        "kg.m-2",
        "10*3/uL",
        "[arb'U]",
    ],
)
def test_ucum_syntax_check_matches_ucumvert(unit: str) -> None:
    try:
        parse_ucum(unit, get_ucum_parser())
        expected = None
    except Exception as error:
        expected = str(error).splitlines()[0]
    if not unit:
        expected = "empty, or surrounded by spaces"
    elif unit == "{INR}":
        expected = None
    assert _ucum_syntax_problem(unit) == expected


def test_an_unchanged_trial_is_loaded_once_and_a_changed_one_again(tmp_path: Path) -> None:
    assert load_trial(CRITERIA) is load_trial(CRITERIA)
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    for path in sorted(ROOT.glob("mappings/*.yaml")):
        (mappings / path.name).write_bytes(path.read_bytes())
    criteria = tmp_path / "trial.yaml"
    criteria.write_text(
        CRITERIA.read_text(encoding="utf-8").replace("../mappings", "mappings"), encoding="utf-8"
    )
    first = load_criteria(criteria)
    terminology = load_terminology(list(first.mapping_paths))
    assert load_criteria(criteria) is first
    assert load_terminology(list(first.mapping_paths)) is terminology
    criteria.write_text(criteria.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    assert load_criteria(criteria) is not first
    units = mappings / "units.yaml"
    units.write_text(units.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    assert load_terminology(list(first.mapping_paths)) is not terminology


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_DATA: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TEXT,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(_TEXT | st.integers(), children, max_size=3)
    ),
    max_leaves=10,
)
_YAML_CHARACTERS = ":-[]{}#&*!|>'\"%@`,? \n\t\\ab1é"


@pytest.mark.parametrize(
    "text", ["|-\n#\n", ">\n#\n", "|-\n\n#\n", "# c\n|\n#\n", "--- |\n#\n", "---\n>-\n#x\n"]
)
def test_a_block_scalar_that_is_the_document_reads_as_ruamel_reads_it(text: str) -> None:
    """YAML 1.2 lets a block scalar that is the document itself start its lines in column 0;
    libyaml (1.1) ends it there and reads a `#` line as a comment (found by the property
    test below: `|-` then `#` read empty): such a text is read by ruamel's scanner."""
    assert _shape(load_round_trip(text, lambda: YAML(typ="rt").load(text))) == _shape(
        YAML(typ="rt").load(text)
    )


@settings(max_examples=int(os.environ.get("YAML_EXAMPLES", "400")), deadline=None)
@given(
    _DATA,
    st.sampled_from([None, '"', "'", "|", ">"]),
    st.sampled_from([None, True, False]),
    st.lists(
        st.tuples(st.integers(min_value=0), st.text(_YAML_CHARACTERS, max_size=3)), max_size=2
    ),
)
def test_libyaml_events_read_what_ruamel_reads_and_refuse_what_it_refuses(
    data: Any, style: str | None, flow: bool | None, edits: list[tuple[int, str]]
) -> None:
    """`load_round_trip` reads texts without `_LIBYAML_HAZARDS` from libyaml's events: for
    documents dumped in every scalar and collection style, then cut or added to anywhere,
    it gives ruamel's round-trip tree (types, values, lines, columns), or ruamel's error."""
    dumper = YAML(typ="rt")
    dumper.default_style = style  # type: ignore[assignment]
    dumper.default_flow_style = flow
    stream = io.StringIO()
    try:
        dumper.dump(data, stream)
    except Exception:  # ruamel's emitter cannot write some values in some styles
        reject()
    text = stream.getvalue()
    for position, inserted in edits:
        at = position % (len(text) + 1)
        text = text[:at] + inserted + text[at + len(inserted) % 2 :]

    def ruamel() -> Any:
        return YAML(typ="rt").load(text)

    try:
        expected: Any = _shape(ruamel())
    except Exception as error:
        expected = f"{type(error).__name__}: {error}"
    try:
        found: Any = _shape(load_round_trip(text, ruamel))
    except YamlLimitError:
        return  # nested deeper than the limit (the loader's own refusal)
    except Exception as error:
        found = f"{type(error).__name__}: {error}"
    assert found == expected, repr(text)
