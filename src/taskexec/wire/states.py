"""The states a try and a dag run move through: the values on the wire and in the
database. Airflow's names and meanings."""

from __future__ import annotations

import enum


class TaskInstanceState(enum.StrEnum):
    """The states a task instance moves through."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    UP_FOR_RETRY = "up_for_retry"


class DagRunState(enum.StrEnum):
    """The states of a dag run."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
