"""Issue 11, items 2, 3 and 9: hostile YAML (alias bombs, deep nesting), empty files, unknown
keys. Each corpus file is run through `lint` and `evaluate` in a subprocess with a time limit,
so a hang fails the test instead of hanging the suite."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
from hostile_support import HOSTILE, ROOT
from hypothesis import given
from hypothesis import strategies as st

from engine.attestations import load_attestations
from engine.errors import AttestationError
from engine.normalise import yaml_reading
from engine.normalise.yaml_reading import (
    MAX_DEPTH,
    ImpossibleDateError,
    YamlLimitError,
    check_limits,
    load_round_trip,
)

TRIALSIEVE = [sys.executable, "-c", "from engine.cli import app; app()"]
LIMIT = 60  # seconds; each run takes about one when the input is refused at once

CRITERIA_CORPUS = {
    "alias-bomb-criteria.yaml": "expands to more than 100,000 nodes",
    "deep-flow-criteria.yaml": f"nested deeper than {MAX_DEPTH} levels",
    "deep-block-criteria.yaml": f"nested deeper than {MAX_DEPTH} levels",
    "huge-window-criteria.yaml": "longer than 200 years",
    "empty-criteria.yaml": "empty",
    "impossible-date-criteria.yaml": "4:10, field title: YAML: '2026-02-30' is not a date",
    "duplicate-anchor-criteria.yaml": "anchor &window is defined again, first on line 5",
    "huge-age-criteria.yaml": "field patient.age.min: 99999999999999999999999999999999999 is "
    "greater than the maximum of 150",
}


def run(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TRIALSIEVE, *arguments],
        capture_output=True,
        text=True,
        timeout=LIMIT,
        cwd=ROOT,
        check=False,
    )


@pytest.mark.parametrize(("name", "message"), CRITERIA_CORPUS.items())
def test_lint_refuses_hostile_criteria_with_a_clear_error(name: str, message: str) -> None:
    finished = run("lint", str(HOSTILE / name))
    assert finished.returncode == 2, finished.stdout + finished.stderr
    assert message in finished.stdout + finished.stderr
    assert "Traceback" not in finished.stderr
    assert max(map(len, (finished.stdout + finished.stderr).splitlines())) < 400


@pytest.mark.parametrize(("name", "message"), CRITERIA_CORPUS.items())
def test_evaluate_refuses_hostile_criteria_with_a_clear_error(
    name: str, message: str, tmp_path: Path
) -> None:
    patient = ROOT / "examples" / "patients" / "itp-relapsed-candidate.json"
    finished = run(
        "evaluate",
        str(HOSTILE / name),
        "--bundle",
        str(patient),
        "--output",
        str(tmp_path / "o.json"),
    )
    assert finished.returncode == 2, finished.stdout + finished.stderr
    assert message in finished.stderr
    assert "Traceback" not in finished.stderr


@pytest.mark.parametrize("name", ["alias-bomb-attestations.yaml", "merge-bomb-attestations.yaml"])
def test_an_alias_bomb_in_an_attestation_file_is_refused(name: str) -> None:
    with pytest.raises(AttestationError, match="expands to more than"):
        load_attestations(HOSTILE / name, ["informed-consent"])


def test_an_unknown_top_level_key_in_an_attestation_file_is_an_error() -> None:
    with pytest.raises(AttestationError, match="atestations") as caught:
        load_attestations(HOSTILE / "attestations-unknown-key.yaml", ["informed-consent"])
    assert caught.value.location.line == 6


def test_an_unknown_key_in_an_attestation_entry_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(
        "attestations:\n  - {patient: p1, by: Dr. X, answer: {informed-consent: true}}\n",
        encoding="utf-8",
    )
    with pytest.raises(AttestationError, match="unknown key"):
        load_attestations(path, ["informed-consent"])


def test_an_impossible_date_in_an_attestation_file_is_named_with_its_line() -> None:
    with pytest.raises(AttestationError, match="'2026-02-30' is not a date") as caught:
        load_attestations(HOSTILE / "impossible-date-attestations.yaml", ["informed-consent"])
    assert "impossible-date-attestations.yaml:5" in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        "when: 2026-02-30\n",  # read through libyaml's events
        "# a\ttab\nwhen: 2026-02-30\n",  # a tab: read by ruamel's scanner
        "a: &x 1\nb: *x\nwhen: 2026-13-01\n",  # an alias: read by ruamel's scanner
    ],
)
def test_an_impossible_date_is_a_marked_error_on_every_reading_path(text: str) -> None:
    with pytest.raises(ImpossibleDateError, match="is not a date") as caught:
        load_round_trip(text, lambda: pytest.fail("the fallback hides the position"))
    mark = caught.value.problem_mark
    assert mark is not None and mark.line == text.count("\n") - 1


@given(year=st.integers(1000, 9999), month=st.integers(0, 19), day=st.integers(0, 39))
def test_a_date_shaped_scalar_is_its_date_or_a_marked_error(
    year: int, month: int, day: int
) -> None:
    text = f"first: 1\nwhen: {year}-{month:02d}-{day:02d}\n"
    try:
        expected = dt.date(year, month, day)
    except ValueError:
        with pytest.raises(ImpossibleDateError) as caught:
            load_round_trip(text, lambda: None)
        assert caught.value.problem_mark is not None and caught.value.problem_mark.line == 1
    else:
        assert load_round_trip(text, lambda: None)["when"] == expected


def test_anchors_within_the_limits_still_load() -> None:
    text = "base: &b {low: 1, high: 2}\nother: *b\nmerged: {<<: *b, high: 3}\n"
    tree = load_round_trip(text, lambda: None)
    assert tree["other"]["low"] == 1 and tree["merged"]["high"] == 3


def test_an_alias_bomb_with_aliases_after_json_like_keys_is_refused() -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 10):
        below = f"a{level - 1}"
        levels.append(f'a{level}: &a{level} {{"k":*{below},"l":*{below},"m":*{below}}}')
    with pytest.raises(YamlLimitError, match="100,000 nodes"):
        check_limits("\n".join(levels) + "\n")


def test_a_text_defining_anchors_but_using_no_alias_is_not_scanned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`&&` in a quoted jsonpath looks like an anchor; without an alias nothing can expand,
    so no second parse is paid (NCT05315778 has such a filter)."""

    def no_scan(*_arguments: object, **_options: object) -> None:
        raise AssertionError("scanned")

    monkeypatch.setattr(yaml_reading, "YAML", no_scan)
    check_limits('filter: "x[?(@.a > 1 && @.b < 2)]"\nbase: &b 1\n')
    criteria = (ROOT / "criteria" / "NCT05315778.yaml").read_text(encoding="utf-8")
    check_limits(criteria)


def test_nesting_just_within_the_limit_loads_and_beyond_it_is_refused() -> None:
    within = "x: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n"
    assert load_round_trip(within, lambda: None) is not None
    with pytest.raises(YamlLimitError):
        load_round_trip("x: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), lambda: None)


def test_the_shipped_yaml_loads_within_the_limits() -> None:
    for path in [*ROOT.glob("criteria/*.yaml"), *ROOT.glob("mappings/*.yaml")]:
        text = path.read_text(encoding="utf-8")
        assert load_round_trip(text, lambda: None) is not None, path
