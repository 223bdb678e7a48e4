"""The Dask engine's own cluster: quiet workers forked from a warm server; evaluators kept."""

from __future__ import annotations

import dataclasses
import datetime as dt
import multiprocessing
import os

import pytest
from cohort_examples import AS_OF

from engine.cohort.engines import (
    QUIET_LOCAL_CLUSTER,
    DaskJob,
    DaskStart,
    EngineSettings,
    _evaluator_of,
)
from engine.cohort.partition import CriteriaFiles
from engine.evaluate import CompiledCriteria


def test_a_dask_worker_keeps_one_evaluator_per_job(trial: CompiledCriteria) -> None:
    job = DaskJob(CriteriaFiles.collect(trial, with_compiled=True), AS_OF, {})
    evaluator = _evaluator_of(job)
    assert _evaluator_of(job) is evaluator
    assert _evaluator_of(dataclasses.replace(job)) is evaluator  # equal: the same job
    later = dataclasses.replace(job, as_of=AS_OF + dt.timedelta(days=1))
    other = _evaluator_of(later)
    assert other is not evaluator and other.as_of == later.as_of
    assert _evaluator_of(dataclasses.replace(job, full=True)).full


def _profiling_and_parent() -> tuple[bool, int]:
    import dask

    return bool(dask.config.get("distributed.worker.profile.enabled")), os.getppid()


def test_the_local_cluster_runs_quiet_workers_forked_from_the_warm_server() -> None:
    pytest.importorskip("distributed")
    psutil = pytest.importorskip("psutil")
    start = DaskStart(EngineSettings(1))
    try:
        start.warm_up(None)
        answers = start.client().run(_profiling_and_parent)
    finally:
        start.close()
    assert QUIET_LOCAL_CLUSTER["distributed.worker.profile.enabled"] is False
    assert len(answers) == 1
    for profiling, parent in answers.values():
        assert not profiling
        if "forkserver" in multiprocessing.get_all_start_methods():
            server = " ".join(psutil.Process(parent).cmdline())
            assert "multiprocessing.forkserver" in server
