"""What trialsieve knows about each FHIR resource type, in one table.

Which types criteria may query, which are medications, which fields date a resource, which
field holds its status and which statuses count by default, what the absence of a resource
means (open or closed world), whether a query needs a concept, and which fields name the
patient. The record, the evaluator, the criteria loader, the sources and the cohort read this
table instead of keeping lists of their own; adding a type starts here.

Nothing here does I/O or imports another stage: every stage may import it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

AbsenceMeaning = Literal["not-met", "unknown"]
"""What "no such resource in the window" means: not met (closed world: the record would
hold it) or unknown, missing data (open world: a measurement may simply not have been made)."""

Dating = Literal["instant", "onset-abatement", "as-given", "in-use"]
"""How a resource's date fields make a span of days (`engine.evaluate.timing.resource_span`);
the first field of `start_fields` found is read:

- `instant`: a point in time (a Period with a start and an end is kept as given);
- `onset-abatement`: from onset (else the recorded date) to the first of `end_fields`; ongoing
  without one, unless the clinical status says it ended (`ended_statuses`: then it covers the
  onset only). An AllergyIntolerance has no end field: it is ongoing unless its clinical
  status is `inactive` or `resolved`;
- `as-given`: the date or Period as written (performed[x], ResearchSubject.period);
- `in-use`: a Period (effective, validity) as given; a single date is ongoing when the status
  says the medication is still in use (`ongoing_statuses`), else that day.
"""


@dataclass(frozen=True)
class DateField:
    """A field that dates a resource.

    `name` is the field (a date, dateTime or instant, or a Period when `is_period`), inside
    the object `container` when given (`dispenseRequest.validityPeriod`). A Period with a
    start and no end is ongoing when `open_ended`, else one day.
    """

    name: str
    is_period: bool = False
    open_ended: bool = False
    container: str | None = None

    @property
    def path(self) -> str:
        """The dotted path, for documentation."""
        return f"{self.container}.{self.name}" if self.container else self.name


@dataclass(frozen=True)
class ResourceType:
    """One resource type as the criteria language uses it."""

    name: str
    dating: Dating
    start_fields: tuple[DateField, ...]
    """Fields giving the start (or the single date), first found wins."""
    end_fields: tuple[DateField, ...] = ()
    """Fields giving the end (abatement), first found wins."""
    status_field: str = "status"
    """Where the status lives: `status`, or `clinicalStatus` (with `verificationStatus`)."""
    default_statuses: frozenset[str] = frozenset()
    """Statuses that count when the atom gives none (empty: see `excluded_statuses`)."""
    excluded_statuses: frozenset[str] = frozenset()
    """Statuses that never count by default (for Condition and AllergyIntolerance, these are
    verification statuses)."""
    active_statuses: frozenset[str] = frozenset()
    """What `status: [active]` means for this type (checked against the as-of date)."""
    ongoing_statuses: frozenset[str] = frozenset()
    """Statuses that make a single-dated resource ongoing (`in-use` dating)."""
    ended_statuses: frozenset[str] = frozenset()
    """Clinical statuses that end a Condition or an AllergyIntolerance without an abatement
    date (`onset-abatement`)."""
    uncertain_statuses: tuple[tuple[str, str], ...] = ()
    """Verification statuses of a Condition or AllergyIntolerance that is not established,
    with the words that say so: such a resource keeps an atom unknown ("confirm") rather than
    counting (`engine.evaluate.timing.UNCERTAIN_VERIFICATION`)."""
    absence: AbsenceMeaning = "not-met"
    """What no matching resource in the window means, unless the atom says otherwise."""
    default_timing: Literal["onset", "active"] | None = "active"
    """How a resource is in a bounded window unless the atom says (`timing:`); None when the
    atom must say, because the types' spans rarely end in records (a Condition nobody
    closed would be "active" in every window since its onset)."""
    medication: bool = False
    """Coded by medicationCodeableConcept or medicationReference (to a Medication)."""
    concept_optional: bool = False
    """A query may leave out `concept` (given a `where` filter)."""
    queryable: bool = True
    """Criteria may name it in `resource:`."""
    patient_fields: tuple[str, ...] = ("subject",)
    """The fields that name the resource's patient."""


_REFUTED = frozenset({"refuted", "entered-in-error"})
"""Verification statuses never counted: FHIR R4 condition-ver-status and
allergyintolerance-verification share these codes (`refuted`, `entered-in-error`)."""
_MEDICATION_EXCLUDED = frozenset(
    {"entered-in-error", "cancelled", "not-taken", "not-done", "draft", "intended"}
)
"""Medication statuses that show no use (FHIR R4 value sets medication-statement-status,
medicationrequest-status, medication-admin-status): `intended` is a MedicationStatement's
"the medication may be taken at some time in the future", not a use."""
MEDICATION_ONGOING = frozenset({"active", "in-progress"})
"""Medication statuses still going on (the status predicates, and the periods of use of
`engine.normalise.medication_exposure`). `on-hold` is not one: FHIR R4 defines it as "actions
implied by the statement/prescription/administration have been temporarily halted"; a held
drug proves use up to the hold, a day the record does not give (its end is unknown)."""
NOT_ORDER_INTENTS = frozenset({"proposal", "plan", "option"})
"""MedicationRequest.intent codes (FHIR R4 value set medicationrequest-intent) that are no
order: `proposal` "a suggestion ... without an intention to ensure it occurs and without
providing an authorization to act", `plan` "an intention to ensure something occurs without
providing an authorization for others to act", `option` "a component or option for a
RequestGroup". Such a request shows no use (`order`, `original-order`, `reflex-order`,
`filler-order` and `instance-order` authorise the drug, and count)."""
_MEDICATION_DATES = (
    DateField("effectivePeriod", is_period=True, open_ended=True),
    DateField("validityPeriod", is_period=True, open_ended=True, container="dispenseRequest"),
    DateField("effectiveDateTime"),
    DateField("authoredOn"),
    DateField("dateAsserted"),
)

RESOURCE_TYPES: dict[str, ResourceType] = {
    resource_type.name: resource_type
    for resource_type in (
        ResourceType(
            "Observation",
            dating="instant",
            start_fields=(
                DateField("effectiveDateTime"),
                DateField("effectiveInstant"),
                DateField("effectivePeriod", is_period=True),
                DateField("issued"),
            ),
            default_statuses=frozenset({"final", "amended", "corrected"}),
            absence="unknown",
        ),
        ResourceType(
            "Condition",
            dating="onset-abatement",
            start_fields=(
                DateField("onsetDateTime"),
                DateField("onsetPeriod", is_period=True, open_ended=True),
                DateField("recordedDate"),
            ),
            end_fields=(DateField("abatementDateTime"), DateField("abatementPeriod", True)),
            status_field="clinicalStatus",
            excluded_statuses=_REFUTED,
            active_statuses=frozenset({"active", "recurrence", "relapse"}),
            ended_statuses=frozenset({"inactive", "remission", "resolved"}),
            uncertain_statuses=(
                ("unconfirmed", "unconfirmed diagnosis"),
                ("provisional", "provisional diagnosis"),
                ("differential", "differential diagnosis"),
            ),
            default_timing=None,
        ),
        ResourceType(
            "Procedure",
            dating="as-given",
            start_fields=(DateField("performedDateTime"), DateField("performedPeriod", True)),
            default_statuses=frozenset({"completed"}),
        ),
        ResourceType(
            "MedicationStatement",
            dating="in-use",
            start_fields=_MEDICATION_DATES,
            excluded_statuses=_MEDICATION_EXCLUDED,
            active_statuses=frozenset({"active"}),
            ongoing_statuses=MEDICATION_ONGOING,
            medication=True,
        ),
        ResourceType(
            "MedicationRequest",
            dating="in-use",
            start_fields=_MEDICATION_DATES,
            excluded_statuses=_MEDICATION_EXCLUDED,
            active_statuses=frozenset({"active"}),
            ongoing_statuses=MEDICATION_ONGOING,
            medication=True,
        ),
        ResourceType(
            "MedicationAdministration",
            dating="in-use",
            start_fields=_MEDICATION_DATES,
            excluded_statuses=_MEDICATION_EXCLUDED,
            active_statuses=frozenset({"in-progress"}),
            ongoing_statuses=MEDICATION_ONGOING,
            medication=True,
        ),
        ResourceType(
            "MedicationDispense",
            dating="in-use",
            start_fields=_MEDICATION_DATES,
            medication=True,
            queryable=False,
        ),
        ResourceType(
            "AllergyIntolerance",
            dating="onset-abatement",
            start_fields=(
                DateField("onsetDateTime"),
                DateField("onsetPeriod", is_period=True, open_ended=True),
                DateField("recordedDate"),
            ),
            status_field="clinicalStatus",
            excluded_statuses=_REFUTED,
            ended_statuses=frozenset({"inactive", "resolved"}),
            uncertain_statuses=(
                ("unconfirmed", "unconfirmed allergy or intolerance"),
                ("presumed", "presumed allergy or intolerance"),
            ),
            default_timing=None,
            concept_optional=True,
            patient_fields=("patient",),
        ),
        ResourceType(
            "ResearchSubject",
            dating="as-given",
            start_fields=(DateField("period", is_period=True, open_ended=True),),
            default_statuses=frozenset(
                {
                    "on-study",
                    "on-study-intervention",
                    "on-study-observation",
                    "off-study",
                    "follow-up",
                    "off-study-follow-up",
                    "pending-on-study",
                }
            ),
            concept_optional=True,
            patient_fields=("individual",),
        ),
    )
}
"""Every resource type the engine reads from a record, by name."""

QUERYABLE_TYPES: tuple[str, ...] = tuple(
    name for name, known in RESOURCE_TYPES.items() if known.queryable
)
"""The types a `resource:` key may name, in the order the docs and the schema list them."""

MEDICATION_TYPES: tuple[str, ...] = tuple(
    name for name, known in RESOURCE_TYPES.items() if known.medication and known.queryable
)
"""The medication types a query reads; `resource: MedicationStatement` brings all of them,
because real systems (Synthea among them) write no MedicationStatement."""

MEDICATION_REFERENCING_TYPES = frozenset(
    name for name, known in RESOURCE_TYPES.items() if known.medication
)
"""Types whose `medicationReference` points to a Medication (to pull and resolve with them)."""

CONCEPT_OPTIONAL_TYPES = frozenset(
    name for name, known in RESOURCE_TYPES.items() if known.concept_optional
)
"""Types a query may name without a `concept` (given a `where` filter)."""

OPEN_WORLD_TYPES = frozenset(
    name for name, known in RESOURCE_TYPES.items() if known.absence == "unknown"
)
"""Absence means "unknown (missing data)" for these types, "not met" for the others."""

CODE_ONLY_TYPES = frozenset({"Condition", "Procedure"})
"""Closed-world types whose only coded field is `code` (no components, no referenced
Medication, no reaction substances): a concept index over them needs no other resource."""

CODED_TYPES = frozenset(
    name for name, known in RESOURCE_TYPES.items() if known.queryable and name != "ResearchSubject"
)
"""The types the record indexes by concept (their code, medication, reaction substances)."""

RECORD_TYPES = CODED_TYPES | {"Patient", "Medication"}
"""The types a patient record reads whatever the criteria: the Patient, the coded types it
classifies (and notes data problems of), and Medication (what medicationReference points to).
A run keeps these and the types the criteria query; nothing reads the others."""


ADMINISTRATIVE_GENDERS = frozenset({"male", "female", "other", "unknown"})
"""Patient.gender's required value set, administrative-gender
(http://hl7.org/fhir/R4/valueset-administrative-gender.html)."""


def administrative_gender_problem(gender: object) -> str:
    """Why `gender` (not in ADMINISTRATIVE_GENDERS) is no Patient.gender."""
    return (
        f"{gender!r} is not an administrative-gender code (male, female, other, unknown; "
        "FHIR R4 Patient.gender)"
    )


CODE_ELEMENTS = ("status", "intent")
"""The `code` elements the engine reads on a resource of its own: a JSON string in FHIR R4
(JSON representation, 2.6.2: "code" is a string), which a faulty feed may send as a number,
an object or a list."""


def code_of(resource: Mapping[str, Any], name: str) -> str | None:
    """The code an element (`status`, `intent`) holds: the string, else None (absent, or not
    a string: `unreadable_code_elements` says which, so that nothing reads it as absent)."""
    value = resource.get(name)
    return value if isinstance(value, str) else None


def unreadable_code_elements(resource: Mapping[str, Any]) -> tuple[str, ...]:
    """The CODE_ELEMENTS of a resource that are present but not a string."""
    return tuple(
        name
        for name in CODE_ELEMENTS
        if resource.get(name) is not None and not isinstance(resource.get(name), str)
    )


def expand_resource_types(written: Sequence[str]) -> tuple[str, ...]:
    """The types a `resource:` value queries, in order: MedicationStatement brings the other
    medication types (`MEDICATION_TYPES`)."""
    expanded: list[str] = []
    for resource_type in written:
        names = MEDICATION_TYPES if resource_type == "MedicationStatement" else (resource_type,)
        for name in names:
            if name not in expanded:
                expanded.append(name)
    return tuple(expanded)


def default_absence(resource_types: Collection[str]) -> AbsenceMeaning:
    """What absence means for an atom over these types when it does not say: unknown only
    when every type is open world (today: Observation alone)."""
    return "unknown" if resource_types and set(resource_types) <= OPEN_WORLD_TYPES else "not-met"


def absence_defaults(resource_types: Collection[str]) -> dict[str, AbsenceMeaning]:
    """The absence default of each type (for messages)."""
    return {name: RESOURCE_TYPES[name].absence for name in resource_types}


def types_needing_timing(resource_types: Collection[str]) -> tuple[str, ...]:
    """The types among these whose atoms must say `timing:` with a bounded window."""
    return tuple(name for name in resource_types if RESOURCE_TYPES[name].default_timing is None)


def resource_types_to_pull(read_types: Collection[str]) -> frozenset[str]:
    """What to pull for criteria that read `read_types`: those, the Patient, and Medication
    when a medication type is read (medicationReference)."""
    types = {"Patient", *read_types}
    if types & MEDICATION_REFERENCING_TYPES:
        types.add("Medication")
    return frozenset(types)
