"""What the service needs around screening a patient (`engine.screening.screen_patient`, as
`trialsieve evaluate` does): choose the trial a request names, read attestation entries, pull
a patient from a FHIR server, and turn a screening into the JSON answer of `POST /evaluate`.

The functions here are part of the service's synchronous core (the routes run them in worker
threads).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from engine.attestations import Attestation
from engine.report import summary_line
from engine.report.explanation import explain
from engine.screening import Screening
from engine.service.models import AttestationEntry
from engine.service.problems import ApiError
from engine.service.trials import LoadedTrial, TrialRegistry
from engine.sinks import WrittenEntry
from engine.sources import FhirServerClient, FhirServerSource, PatientResources


def pick_trial(trials: TrialRegistry, requested: str | None) -> LoadedTrial:
    """The trial a request names; the only one loaded when it names none."""
    if requested is None:
        if len(trials) == 1:
            return next(iter(trials.values()))
        raise ApiError.of(
            400,
            "required",
            f"trial is required: this service screens for {', '.join(trials)}",
            "trial",
        )
    trial = trials.get(requested)
    if trial is None:
        raise ApiError.of(
            404,
            "not-found",
            f"trial {requested} is not loaded (loaded: {', '.join(trials)})",
            "trial",
        )
    return trial


def read_attestations(
    trial: LoadedTrial, entries: Sequence[AttestationEntry], patient_id: str
) -> Mapping[str, Attestation]:
    """The answers given for `patient_id` (entries without `patient` are for it); 400 for an
    item the trial does not ask or an entry about another patient.
    """
    known = trial.criteria.manual_ids
    answers: dict[str, Attestation] = {}
    for index, entry in enumerate(entries):
        if entry.patient is not None and entry.patient != patient_id:
            raise ApiError.of(
                400,
                "invalid",
                f"attestations[{index}].patient is {entry.patient}, but the patient evaluated "
                f"is {patient_id}",
                f"attestations[{index}].patient",
            )
        for manual_id, answer in entry.answers.items():
            if manual_id not in known:
                raise ApiError.of(
                    400,
                    "invalid",
                    f"attestations[{index}].answers: '{manual_id}' is not a manual item of "
                    f"{trial.id} (known: {', '.join(sorted(known))})",
                    f"attestations[{index}].answers.{manual_id}",
                )
            answers[manual_id] = Attestation(manual_id, answer, entry.by, entry.date)
    return answers


def pull_patient(
    client: FhirServerClient, patient_id: str, resource_types: frozenset[str], page_size: int
) -> PatientResources:
    """One patient's data from a server, as `trialsieve evaluate --server` pulls it."""
    return FhirServerSource(client, [patient_id], resource_types, page_size=page_size).pull(
        patient_id
    )


def evaluation_json(
    screening: Screening, written: Sequence[WrittenEntry] | None = None
) -> dict[str, Any]:
    """The answer of `POST /evaluate`: every criterion's outcome, the status, and the
    ResearchSubject and DetectedIssue of the transaction Bundle `trialsieve evaluate` writes.
    """
    evaluation = screening.evaluation
    entries = screening.transaction_bundle["entry"]
    explained = {criterion.id: criterion for criterion in explain(evaluation).criteria}
    answer: dict[str, Any] = {
        "trial": evaluation.criteria.trial.id,
        "patient": evaluation.patient_reference,
        "asOf": evaluation.as_of.isoformat(),
        "status": evaluation.status.value,
        "summary": summary_line(evaluation),
        "newestData": evaluation.newest_data.isoformat() if evaluation.newest_data else None,
        "criteria": [
            {
                "id": result.id,
                "number": explained[result.id].number,
                "label": explained[result.id].label,
                "text": explained[result.id].protocol_text,
                "kind": result.kind.value,
                "verdict": result.verdict.value,
                "outcome": explained[result.id].outcome_text,
                "explanation": explained[result.id].summary,
                "toSettle": list(explained[result.id].to_settle),
                "questions": list(explained[result.id].questions),
                "truth": result.outcome.truth.value,
                "reason": result.outcome.reason,
                "evidence": list(result.outcome.evidence),
                "missing": list(result.outcome.missing),
                "manual": list(result.outcome.manual),
            }
            for result in evaluation.results
        ],
        "dataProblems": list(evaluation.data_problems),
        "researchSubject": entries[1]["resource"],
        "detectedIssue": entries[2]["resource"],
    }
    if written is not None:
        answer["written"] = [
            {"request": entry.request, "status": entry.status, "location": entry.location}
            for entry in written
        ]
    return answer
