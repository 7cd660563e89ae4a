"""The states a try and a dag run move through: the values on the wire and in the
database. Airflow's names and meanings."""

from __future__ import annotations

import enum


class TaskInstanceState(enum.StrEnum):
    """The states a task instance moves through. A task instance with no status yet
    (Airflow's None) has not been scheduled: its state is NULL."""

    SCHEDULED = "scheduled"  # its upstreams let it run; the scheduler will queue it
    QUEUED = "queued"  # handed to an executor
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    UP_FOR_RETRY = "up_for_retry"  # failed; its next try waits for the retry delay
    UPSTREAM_FAILED = "upstream_failed"
    SKIPPED = "skipped"


class DagRunState(enum.StrEnum):
    """The states of a dag run."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"


# A task instance in one of these will not change again by itself.
FINISHED = frozenset(
    {
        TaskInstanceState.SUCCESS,
        TaskInstanceState.FAILED,
        TaskInstanceState.UPSTREAM_FAILED,
        TaskInstanceState.SKIPPED,
    }
)
FAILED_STATES = frozenset({TaskInstanceState.FAILED, TaskInstanceState.UPSTREAM_FAILED})
