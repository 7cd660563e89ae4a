"""The built-in tasks: ``BashTask`` and ``PythonTask``."""

from __future__ import annotations

import inspect
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any, ClassVar

from taskexec.sdk.dag import BaseTask, TaskFailedError


class BashTask(BaseTask):
    """Runs a templated bash command; a non-zero exit status fails the try."""

    template_fields: ClassVar[Sequence[str]] = ("bash_command", "env")
    template_fields_renderers: ClassVar[Mapping[str, str]] = {"bash_command": "bash", "env": "json"}

    def __init__(
        self,
        task_id: str,
        *,
        bash_command: str,
        env: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(task_id, **kwargs)
        self.bash_command = bash_command
        self.env = dict(env) if env is not None else None

    def execute(self, context: dict[str, Any], output: IO[str]) -> int:
        """Run the command with ``env`` added to the worker's environment."""
        output.flush()
        env = {**os.environ, **(self.env or {})}
        proc = subprocess.run(
            ["bash", "-c", self.bash_command],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            check=False,
        )
        if proc.returncode != 0:
            raise TaskFailedError(f"bash command exited with status {proc.returncode}")
        return proc.returncode


class PythonTask(BaseTask):
    """Calls ``python_callable(*op_args, **op_kwargs)``. The callable also gets
    ``context=`` and ``templates_dict=`` when its signature names them."""

    template_fields: ClassVar[Sequence[str]] = ("op_args", "op_kwargs", "templates_dict")
    template_fields_renderers: ClassVar[Mapping[str, str]] = {
        "op_args": "json",
        "op_kwargs": "json",
        "templates_dict": "json",
    }

    def __init__(
        self,
        task_id: str,
        *,
        python_callable: Callable[..., Any],
        op_args: Sequence[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        templates_dict: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(task_id, **kwargs)
        self.python_callable = python_callable
        self.op_args = list(op_args or [])
        self.op_kwargs = dict(op_kwargs or {})
        self.templates_dict = dict(templates_dict) if templates_dict is not None else None

    def execute(self, context: dict[str, Any], output: IO[str]) -> Any:
        """Call the callable with the rendered arguments."""
        params = inspect.signature(self.python_callable).parameters
        extra: dict[str, Any] = {}
        if "context" in params:
            extra["context"] = context
        if "templates_dict" in params:
            extra["templates_dict"] = self.templates_dict
        return self.python_callable(*self.op_args, **self.op_kwargs, **extra)
