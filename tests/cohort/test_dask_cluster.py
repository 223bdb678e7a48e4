"""The Dask engine's own cluster: quiet workers forked from the command's process (or a warm
server); evaluators kept."""

from __future__ import annotations

import dataclasses
import datetime as dt
import multiprocessing
import os
import threading
from pathlib import Path

import pytest
from cohort_examples import AS_OF, CRITERIA, run_python, skip_unless_dask_workers_fork

from engine.cohort.engines import (
    QUIET_LOCAL_CLUSTER,
    DaskJob,
    DaskStart,
    EngineSettings,
    _evaluator_of,
    _yaml_safe_load_in_c,
    run_dask,
)
from engine.cohort.inputs import NdjsonInput
from engine.cohort.partition import CriteriaFiles, WorkerSetup
from engine.cohort.runner import kept_types
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


def test_a_local_cluster_is_hosted_by_a_fork_of_the_command_s_process_with_quiet_workers() -> None:
    """In a process that runs no other thread (a `trialsieve cohort` before pass 1), the
    cluster lives in a process forked from it, which imports distributed, holds the scheduler
    and one worker, and forks the other workers from itself (distributed, imported once, is
    theirs as well): the command's process never imports distributed."""
    skip_unless_dask_workers_fork()
    code = (
        "import os, sys\n"
        "from engine.cohort.engines import HOST_WORKER, DaskStart, EngineSettings\n"
        "def _profiling_and_parents(dask_worker):\n"
        "    import dask, psutil\n"
        "    profiling = dask.config.get('distributed.worker.profile.enabled')\n"
        "    return (dask_worker.name == HOST_WORKER, bool(profiling), os.getpid(),\n"
        "            os.getppid(), psutil.Process(os.getppid()).ppid())\n"
        "if __name__ == '__main__':\n"
        "    start = DaskStart(EngineSettings(3))\n"
        "    start.begin()\n"
        "    try:\n"
        "        answers = sorted(start.run_on_workers(_profiling_and_parents).values())\n"
        "    finally:\n"
        "        start.close()\n"
        "    host = answers[-1][2]\n"
        "    print([(in_host, profiling, parent == os.getpid(), parent == host, "
        "grandparent == os.getpid()) for in_host, profiling, _, parent, grandparent in "
        "answers], 'distributed' in sys.modules)\n"
    )
    done = run_python(code)
    assert done.stdout.strip() == (
        "[(False, False, False, True, True), (False, False, False, True, True), "
        "(True, False, True, False, False)] False"
    )
    assert QUIET_LOCAL_CLUSTER["distributed.worker.profile.enabled"] is False


def test_a_forked_worker_that_dies_before_joining_fails_the_start_instead_of_hanging() -> None:
    skip_unless_dask_workers_fork()
    code = (
        "import os\n"
        "from engine.cohort import engines\n"
        "from engine.errors import CohortError\n"
        "engines._serve_as_dask_worker = lambda *arguments: os._exit(3)\n"
        "start = engines.DaskStart(engines.EngineSettings(2))  # the host's worker, one fork\n"
        "start.begin()\n"
        "try:\n"
        "    start.run_on_workers(os.getpid)\n"
        "except CohortError as error:\n"
        "    print(error)\n"
        "finally:\n"
        "    start.close()\n"
    )
    done = run_python(code)
    assert done.stdout.strip() == (
        "a Dask worker process ended before it joined the cluster (exit code 3)"
    )


def test_a_forked_worker_that_dies_before_joining_ends_the_run_with_a_clear_error(
    ndjson_folder: Path,
) -> None:
    """A run, as `run_on_workers`, waits for every forked worker to join the cluster: one
    that ends before it joins stops the run with a CohortError, no traceback, no hang."""
    skip_unless_dask_workers_fork()
    code = (
        "import os, sys, tempfile\n"
        "from pathlib import Path\n"
        "from engine.cohort import NdjsonInput, engines, run_cohort\n"
        "from engine.errors import CohortError\n"
        "from cohort_examples import AS_OF, CRITERIA\n"
        "engines._serve_as_dask_worker = lambda *arguments: os._exit(3)\n"
        "try:\n"
        "    run_cohort(CRITERIA, NdjsonInput(Path(sys.argv[1])),"
        " Path(tempfile.mkdtemp()) / 'out', AS_OF, engine='dask', workers=2,"
        " partition_count=3)\n"
        "except CohortError as error:\n"
        "    print(error)\n"
    )
    done = run_python(code, str(ndjson_folder))
    assert done.stdout.strip() == (
        "a Dask worker process ended before it joined the cluster (exit code 3)"
    )
    assert "Traceback" not in done.stderr


def test_with_another_thread_running_the_workers_fork_from_the_warm_server() -> None:
    """A fork copies only the calling thread: while another runs, the LocalCluster's
    workers come from the forkserver that imported distributed and trialsieve instead."""
    pytest.importorskip("distributed")
    psutil = pytest.importorskip("psutil")
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        start = DaskStart(EngineSettings(1))
    finally:
        stop.set()
        other.join()
    try:
        start.begin()
        start.warm_up(None)
        answers = start.run_on_workers(_profiling_and_parent)
    finally:
        start.close()
    assert len(answers) == 1
    for profiling, parent in answers.values():
        assert not profiling
        if "forkserver" in multiprocessing.get_all_start_methods():
            server = " ".join(psutil.Process(parent).cmdline())
            assert "multiprocessing.forkserver" in server


def _heartbeat_failure_and_other_error_logged() -> list[str]:
    """What a worker's 'distributed.worker' logger lets through of two records."""
    import logging

    passed: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            passed.append(record.getMessage())

    logger = logging.getLogger("distributed.worker")
    handler = Keep()
    logger.addHandler(handler)
    try:
        logger.error("Failed to communicate with scheduler during heartbeat.")
        logger.error("Compute Failed")
    finally:
        logger.removeHandler(handler)
    return passed


def test_a_run_on_its_own_cluster_drops_only_the_heartbeat_races_of_its_clean_close(
    trial: CompiledCriteria, tmp_path: Path, ndjson_folder: Path
) -> None:
    """A worker of a closing LocalCluster may log an ERROR with a traceback when its
    heartbeat meets the scheduler closing: at the end of a run (all results written) the
    workers drop that record and the 'unaware of this worker' warning, and nothing else."""
    pytest.importorskip("distributed")
    start = DaskStart(EngineSettings(1))
    try:
        start.begin()
        start.warm_up(None)
        before = start.run_on_workers(_heartbeat_failure_and_other_error_logged)
        assert [len(passed) for passed in before.values()] == [2]
        setup = WorkerSetup(
            str(CRITERIA),
            NdjsonInput(ndjson_folder).prepare(
                tmp_path / "work", 2, lambda _problem: None, kept_types(trial), 1
            ),
            str(tmp_path),
            AS_OF,
            trial,
            {},
        )
        settings = EngineSettings(1, started=start)
        run_dask(setup, [0, 1], settings, lambda: None, lambda _index: None)
        after = start.run_on_workers(_heartbeat_failure_and_other_error_logged)
    finally:
        start.close()
    assert list(after.values()) == [["Compute Failed"]]


def test_a_run_s_own_cluster_has_ended_when_the_run_returns(
    ndjson_folder: Path, tmp_path: Path
) -> None:
    """The run's cluster begins to close as its last partition is written (while the outputs
    are assembled): by the time `run_cohort` returns, its host and workers have ended, and
    the command's process has not imported distributed."""
    skip_unless_dask_workers_fork()
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "import psutil\n"
        "from engine.cohort import NdjsonInput, run_cohort\n"
        "from cohort_examples import AS_OF, CRITERIA\n"
        "if __name__ == '__main__':\n"
        "    run_cohort(CRITERIA, NdjsonInput(Path(sys.argv[1])), Path(sys.argv[2]), AS_OF,"
        " engine='dask', workers=2)\n"
        "    print(psutil.Process().children(recursive=True), 'distributed' in sys.modules)\n"
    )
    done = run_python(code, str(ndjson_folder), str(tmp_path / "out"))
    assert done.stdout.strip() == "[] False"
    assert (tmp_path / "out" / "summary.json").is_file()


def test_a_cluster_never_closed_does_not_keep_the_interpreter_from_exiting() -> None:
    """multiprocessing waits for its processes when the interpreter exits: a hosted cluster
    that nobody closed is told to close first, instead of waiting for a request forever."""
    skip_unless_dask_workers_fork()
    code = (
        "import os\n"
        "from engine.cohort.engines import DaskStart, EngineSettings\n"
        "if __name__ == '__main__':\n"
        "    start = DaskStart(EngineSettings(1))\n"
        "    print(len(start.run_on_workers(os.getpid)), start.hosted)\n"
    )
    assert run_python(code).stdout.strip() == "1 True"


def test_the_cluster_s_host_imports_distributed_without_jinja2_and_reads_its_yaml_in_c() -> None:
    """The host's import of distributed leaves out jinja2 (notebook HTML templates), reads
    Dask's YAML defaults with libyaml's safe loader and restores PyYAML's own `safe_load`
    after, and freezes what it holds for the collector; the workers it forks inherit that,
    and Dask's settings are the same as with Python's loader."""
    skip_unless_dask_workers_fork()
    code = (
        "import gc, os, sys\n"
        "from engine.cohort.engines import DaskStart, EngineSettings\n"
        "def _state():\n"
        "    import dask, yaml\n"
        "    settings = (dask.config.get('distributed.scheduler.allowed-failures'),\n"
        "                dask.config.get('distributed.comm.timeouts.connect'))\n"
        "    return (sys.modules.get('jinja2', 'absent'), yaml.safe_load.__module__,\n"
        "            gc.get_freeze_count() > 0, settings)\n"
        "if __name__ == '__main__':\n"
        "    start = DaskStart(EngineSettings(1))\n"
        "    try:\n"
        "        print(list(start.run_on_workers(_state).values()), start.hosted)\n"
        "    finally:\n"
        "        start.close()\n"
    )
    assert run_python(code).stdout.strip() == "[(None, 'yaml', True, (3, '30s'))] True"


def test_the_cluster_s_workers_inherit_the_code_digest_their_first_task_reads() -> None:
    """The host reads the digest of trialsieve's code (the key of the cache of validated
    output shapes, which each worker's first task reads) while it imports distributed, before
    it forks its workers: no worker hashes trialsieve's sources itself."""
    skip_unless_dask_workers_fork()
    code = (
        "from engine import compiled_cache\n"
        "from engine.cohort.engines import DaskStart, EngineSettings\n"
        "def _digests_read():\n"
        "    return compiled_cache.code_digest.cache_info().currsize\n"
        "if __name__ == '__main__':\n"
        "    start = DaskStart(EngineSettings(2))\n"
        "    start.begin()\n"
        "    try:\n"
        "        print(list(start.run_on_workers(_digests_read).values()), start.hosted)\n"
        "    finally:\n"
        "        start.close()\n"
    )
    assert run_python(code).stdout.strip() == "[1, 1] True"


def test_dask_s_yaml_defaults_read_in_c_are_those_python_reads() -> None:
    yaml = pytest.importorskip("yaml")
    distributed = pytest.importorskip("distributed")
    import dask

    files = [
        Path(dask.__file__).parent / "dask.yaml",
        Path(distributed.__file__).parent / "distributed.yaml",
    ]
    python_safe_load = yaml.safe_load
    in_python = [python_safe_load(file.read_text()) for file in files]
    with _yaml_safe_load_in_c():
        assert yaml.safe_load is not python_safe_load
        assert [yaml.safe_load(file.read_text()) for file in files] == in_python
    assert yaml.safe_load is python_safe_load


def test_a_run_ships_the_criteria_collected_when_they_were_loaded(
    trial: CompiledCriteria,
) -> None:
    """Collecting pickles the compiled criteria: once a run, when they are loaded (while pass
    1 runs), for the warm-up and the tasks; other criteria (here: other unavailable types)
    are collected anew."""
    start = DaskStart(EngineSettings(1, "tcp://127.0.0.1:1"))  # nothing starts before begin
    try:
        assert start.criteria_files(trial).compiled is not None  # not loaded: collected
        start.criteria_loaded(trial)
        loaded = start.criteria_files(trial)
        assert loaded.compiled is not None and start.criteria_files(trial) is loaded
        start.warm_up(trial)
        assert start.criteria_files(trial) is loaded
        other = dataclasses.replace(trial, unavailable_types=frozenset({"Procedure"}))
        files = start.criteria_files(other)
        assert files is not loaded and files.unavailable_types == ("Procedure",)
        assert files.compiled is not None
    finally:
        start.close()


def test_criteria_sent_while_the_host_imports_are_loaded_before_its_workers_fork() -> None:
    """The command sends the hosted cluster the criteria as soon as they are compiled (while
    pass 1 runs); there by the end of the host's import (here the host waits for them), they
    are loaded into the host's cache of compiled criteria before it forks its workers, so
    every worker has them before the run (none unpickles them for its first task)."""
    skip_unless_dask_workers_fork()
    code = (
        "from engine.cohort import engines\n"
        "from engine.cohort.partition import CriteriaFiles\n"
        "from engine.trial import load_trial\n"
        "from cohort_examples import CRITERIA\n"
        "def _key():\n"
        "    return None if engines._compiled is None else engines._compiled[0]\n"
        "before_the_fork = engines._criteria_before_the_fork\n"
        "engines._criteria_before_the_fork = lambda requests: (\n"
        "    requests.poll(60), before_the_fork(requests))[1]\n"
        "if __name__ == '__main__':\n"
        "    trial = load_trial(CRITERIA)\n"
        "    start = engines.DaskStart(engines.EngineSettings(2))\n"
        "    start.begin()\n"
        "    start.criteria_loaded(trial)\n"
        "    try:\n"
        "        keys = list(start.run_on_workers(_key).values())\n"
        "    finally:\n"
        "        start.close()\n"
        "    print(keys == [CriteriaFiles.collect(trial).key] * 2)\n"
    )
    assert run_python(code).stdout.strip() == "True"


def test_pass_one_leaves_a_core_to_the_hosted_cluster_s_start(
    ndjson_folder: Path, tmp_path: Path
) -> None:
    """While the cluster's host imports distributed and starts the cluster (a core's work, on
    the way to the first partition), pass 1 runs in one process fewer (`cores_taken`), for
    an input it splits in about that time (`HOSTED_START_BYTES`: here one larger than 0
    bytes is taken for a large one, and pass 1 keeps every core); with the local engine it
    runs in as many processes as there are workers."""
    skip_unless_dask_workers_fork()
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "import engine.cohort.engines as engines\n"
        "import engine.cohort.runner as runner\n"
        "from engine.cohort import NdjsonInput, run_cohort\n"
        "from cohort_examples import AS_OF, CRITERIA\n"
        "workers = []\n"
        "first_pass = runner._first_pass\n"
        "def spied(*arguments, **named):\n"
        "    workers.append(arguments[5])\n"
        "    return first_pass(*arguments, **named)\n"
        "runner._first_pass = spied\n"
        "if __name__ == '__main__':\n"
        "    for engine, folder in (('dask', 'dask'), ('local', 'local'), ('dask', 'large')):\n"
        "        if folder == 'large':\n"
        "            engines.HOSTED_START_BYTES = 0\n"
        "        run_cohort(CRITERIA, NdjsonInput(Path(sys.argv[1])), Path(sys.argv[2]) / folder,"
        " AS_OF, engine=engine, workers=2)\n"
        "    print(workers)\n"
    )
    done = run_python(code, str(ndjson_folder), str(tmp_path))
    assert done.stdout.strip() == "[1, 2, 2]"
    dask, local, large = (
        (tmp_path / folder / "cohort.csv").read_bytes() for folder in ("dask", "local", "large")
    )
    assert dask == local == large
