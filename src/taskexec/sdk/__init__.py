"""The worker side: authoring dags and tasks, rendering, the API client and the runner."""

from __future__ import annotations

from taskexec.sdk.dag import BaseTask, BashTask, Dag, PythonTask, TaskFailedError, mask_secret

__all__ = ["BaseTask", "BashTask", "Dag", "PythonTask", "TaskFailedError", "mask_secret"]
