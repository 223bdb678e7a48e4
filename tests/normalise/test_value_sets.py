"""Concepts whose codes come from FHIR ValueSet files (`value_set:` in the mappings): an
expansion, a compose of concept lists (FHIR R4 ValueSet 4.9.5), or `$expand` by a terminology
server, cached beside the file so that runs are reproducible offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from engine.errors import TrialsieveError
from engine.normalise import load_terminology
from engine.normalise.value_sets import TERMINOLOGY_SERVER_VARIABLE, cache_path

SNOMED = "http://snomed.info/sct"
SERVER = "http://127.0.0.1:9/fhir"

MAPPINGS = """\
systems:
  snomed: {uri: http://snomed.info/sct}
concepts:
  diabetes:
    display: Diabetes mellitus
    value_set: diabetes.valueset.json
"""


def value_set(**fields: Any) -> dict[str, Any]:
    return {"resourceType": "ValueSet", "status": "active", **fields}


def terminology_with(folder: Path, resource: dict[str, Any]) -> Any:
    (folder / "mappings.yaml").write_text(MAPPINGS)
    (folder / "diabetes.valueset.json").write_text(json.dumps(resource))
    return load_terminology([folder / "mappings.yaml"])


def members(terminology: Any, *codes: str) -> list[bool]:
    return ["diabetes" in terminology.concepts_of_coding(SNOMED, code) for code in codes]


def test_compose_includes_concept_lists_minus_excludes(tmp_path: Path) -> None:
    terminology = terminology_with(
        tmp_path,
        value_set(
            compose={
                "include": [
                    {"system": SNOMED, "concept": [{"code": "44054006"}, {"code": "46635009"}]}
                ],
                "exclude": [{"system": SNOMED, "concept": [{"code": "46635009"}]}],
            }
        ),
    )
    assert members(terminology, "44054006", "46635009", "73211009") == [True, False, False]


def test_an_expansion_in_the_file_is_used_as_it_is(tmp_path: Path) -> None:
    terminology = terminology_with(
        tmp_path,
        value_set(
            compose={"include": [{"system": SNOMED, "filter": [{"op": "is-a"}]}]},
            expansion={
                "contains": [
                    {
                        "system": SNOMED,
                        "code": "73211009",
                        "contains": [{"system": SNOMED, "code": "44054006"}],
                    },
                    {"system": SNOMED, "code": "111552007", "inactive": True},
                ]
            },
        ),
    )
    assert members(terminology, "73211009", "44054006", "111552007") == [True, True, False]


IS_A = value_set(
    compose={
        "include": [
            {
                "system": SNOMED,
                "filter": [{"property": "concept", "op": "is-a", "value": "73211009"}],
            }
        ]
    }
)


def test_an_is_a_filter_without_server_or_expansion_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TERMINOLOGY_SERVER_VARIABLE, raising=False)
    with pytest.raises(TrialsieveError) as raised:
        terminology_with(tmp_path, IS_A)
    message = str(raised.value)
    assert "mappings.yaml:6:" in message and "field concepts.diabetes.value_set" in message
    assert "needs a terminology server" in message
    assert TERMINOLOGY_SERVER_VARIABLE in message


def expanded(*codes: str) -> dict[str, Any]:
    return value_set(
        expansion={
            "total": len(codes),
            "contains": [{"system": SNOMED, "code": code} for code in codes],
        }
    )


def test_is_a_is_expanded_by_the_server_then_read_from_the_cache_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TERMINOLOGY_SERVER_VARIABLE, SERVER)
    with respx.mock(assert_all_called=True) as router:
        route = router.post(f"{SERVER}/ValueSet/$expand").mock(
            return_value=httpx.Response(200, json=expanded("73211009", "44054006"))
        )
        terminology = terminology_with(tmp_path, IS_A)
        sent = json.loads(route.calls[0].request.content)
    assert sent["parameter"][0]["name"] == "valueSet"
    assert sent["parameter"][0]["resource"]["compose"] == IS_A["compose"]
    assert members(terminology, "73211009", "44054006", "38341003") == [True, True, False]
    cached = json.loads(cache_path(tmp_path / "diabetes.valueset.json").read_text())
    assert cached["server"] == SERVER

    monkeypatch.delenv(TERMINOLOGY_SERVER_VARIABLE)
    (tmp_path / "mappings.yaml").write_text(MAPPINGS + "    description: offline\n")
    with respx.mock(assert_all_mocked=True):  # any request would fail the test
        offline = load_terminology([tmp_path / "mappings.yaml"])
    assert members(offline, "73211009", "44054006") == [True, True]


def test_a_cache_of_another_compose_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TERMINOLOGY_SERVER_VARIABLE, raising=False)
    cache_path(tmp_path / "diabetes.valueset.json").write_text(
        json.dumps({"compose_sha256": "0" * 64, "valueSet": expanded("1")})
    )
    with pytest.raises(TrialsieveError, match="no cached expansion"):
        terminology_with(tmp_path, IS_A)


def test_a_server_error_names_the_file_and_the_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TERMINOLOGY_SERVER_VARIABLE, SERVER)
    outcome = {"resourceType": "OperationOutcome", "issue": [{"diagnostics": "unknown system"}]}
    with respx.mock() as router:
        router.post(f"{SERVER}/ValueSet/$expand").mock(
            return_value=httpx.Response(422, json=outcome)
        )
        with pytest.raises(TrialsieveError, match="answered 422: unknown system"):
            terminology_with(tmp_path, IS_A)
    assert not cache_path(tmp_path / "diabetes.valueset.json").exists()


def test_not_a_value_set(tmp_path: Path) -> None:
    with pytest.raises(TrialsieveError, match="holds Patient, not a FHIR ValueSet"):
        terminology_with(tmp_path, {"resourceType": "Patient"})


def test_a_changed_value_set_file_is_read_again(tmp_path: Path) -> None:
    def listing(*codes: str) -> dict[str, Any]:
        concepts = [{"code": code} for code in codes]
        return value_set(compose={"include": [{"system": SNOMED, "concept": concepts}]})

    first = terminology_with(tmp_path, listing("44054006"))
    assert load_terminology([tmp_path / "mappings.yaml"]) is first  # unchanged: cached
    (tmp_path / "diabetes.valueset.json").write_text(json.dumps(listing("46635009")))
    second = load_terminology([tmp_path / "mappings.yaml"])
    assert members(second, "44054006", "46635009") == [False, True]
