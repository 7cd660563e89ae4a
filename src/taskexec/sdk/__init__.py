"""The worker side: authoring dags and tasks, rendering, the API client and the runner."""

from __future__ import annotations

from taskexec.sdk.dag import BaseTask, Dag, TaskFailedError, chain, mask_secret
from taskexec.sdk.operators import BashTask, PythonTask

__all__ = ["BaseTask", "BashTask", "Dag", "PythonTask", "TaskFailedError", "chain", "mask_secret"]
