"""How a Dask run with a shared filesystem makes tasks of its partitions (`task_groups`)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.cohort.engines import PARTITIONS_PER_TASK, TASKS_PER_THREAD, task_groups

LARGEST_FIRST = [5, 3, 12, 0, 9, 14, 1, 7, 2, 15, 4, 11, 6, 8, 10, 13]


def test_sixteen_partitions_on_two_threads_are_eight_tasks_of_two_in_the_run_s_order() -> None:
    assert task_groups(LARGEST_FIRST, 2) == [
        (5, 3),
        (12, 0),
        (9, 14),
        (1, 7),
        (2, 15),
        (4, 11),
        (6, 8),
        (10, 13),
    ]


def test_few_partitions_for_the_threads_stay_one_a_task() -> None:
    assert task_groups([2, 0, 1, 5, 4, 3], 2) == [(2,), (0,), (1,), (5,), (4,), (3,)]
    assert task_groups(LARGEST_FIRST, 4) == [(index,) for index in LARGEST_FIRST]


def test_a_cluster_without_workers_yet_gets_one_partition_a_task() -> None:
    assert task_groups(LARGEST_FIRST, 0) == [(index,) for index in LARGEST_FIRST]


def test_a_large_input_on_a_small_cluster_has_at_most_four_partitions_a_task() -> None:
    groups = task_groups(list(range(1000)), 2)
    assert len(groups) == 250
    assert {len(group) for group in groups} == {PARTITIONS_PER_TASK}


@given(
    st.lists(st.integers(min_value=0, max_value=10**6), unique=True, max_size=500),
    st.integers(min_value=0, max_value=64),
)
def test_tasks_are_consecutive_equal_runs_of_the_partitions_enough_per_thread(
    indexes: list[int], threads: int
) -> None:
    groups = task_groups(indexes, threads)
    assert [index for group in groups for index in group] == indexes
    assert all(1 <= len(group) <= PARTITIONS_PER_TASK for group in groups)
    assert len({len(group) for group in groups[:-1]}) <= 1  # the last may be shorter
    if groups:
        assert len(groups[-1]) <= len(groups[0])
    if threads == 0:
        assert len(groups) == len(indexes)
    else:
        assert len(groups) >= min(len(indexes), TASKS_PER_THREAD * threads)
        if len(indexes) >= 2 * TASKS_PER_THREAD * threads:
            assert len(groups[0]) >= 2  # grouped: fewer tasks, each still long enough
