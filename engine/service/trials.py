"""The trials a service screens for: every criteria file of a folder, compiled once at start."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from engine.attestations import Attestations, load_attestations
from engine.errors import Location, ServiceConfigError
from engine.evaluate import CompiledCriteria
from engine.sources.fhir_server import resource_types_to_pull
from engine.trial import load_trial

CRITERIA_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class LoadedTrial:
    """A compiled trial, the file it came from and the resource types its criteria read."""

    criteria: CompiledCriteria
    path: Path
    resource_types: frozenset[str]
    attestations: Attestations = field(default_factory=dict)
    """Answers to manual items per patient, from the service's attestation file."""

    @property
    def id(self) -> str:
        return self.criteria.trial.id


@dataclass(frozen=True)
class TrialRegistry(Mapping[str, LoadedTrial]):
    """The loaded trials by trial id (NCT05315778), in file-name order."""

    trials: Mapping[str, LoadedTrial]

    def __getitem__(self, trial_id: str) -> LoadedTrial:
        return self.trials[trial_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self.trials)

    def __len__(self) -> int:
        return len(self.trials)

    @property
    def resource_types(self) -> frozenset[str]:
        """Every resource type some trial reads (what one pull per patient must bring)."""
        return frozenset(t for trial in self.trials.values() for t in trial.resource_types)


def load_trials(folder: Path, attestations: Path | None = None) -> TrialRegistry:
    """Load and compile every criteria file in `folder`, with each trial's answers from the
    `attestations` file; CriteriaError/MappingError/AttestationError as raised by the loaders,
    ServiceConfigError when there is no criteria file or two share a trial id.
    """
    if not folder.is_dir():
        raise ServiceConfigError("not a folder of criteria files", Location(file=str(folder)))
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in CRITERIA_SUFFIXES)
    if not paths:
        raise ServiceConfigError(
            "no criteria files (*.yaml, *.yml) in the folder", Location(file=str(folder))
        )
    trials: dict[str, LoadedTrial] = {}
    for path in paths:
        criteria = load_trial(path)
        answers = (
            load_attestations(attestations, criteria.manual_ids, criteria.trial.id)
            if attestations is not None
            else {}
        )
        loaded = LoadedTrial(
            criteria, path, resource_types_to_pull(criteria.resource_types), answers
        )
        earlier = trials.get(loaded.id)
        if earlier is not None:
            raise ServiceConfigError(
                f"trial {loaded.id} is also defined in {earlier.path}", Location(file=str(path))
            )
        trials[loaded.id] = loaded
    return TrialRegistry(trials)
