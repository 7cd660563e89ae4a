"""Rendering: sandboxed, strict Jinja over nested fields; the RTIF payload is masked,
serialized and truncated."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from taskexec.sdk import BaseTask, BashTask, Dag, PythonTask, rendering
from taskexec.sdk.serialization import TRUNCATION_PREFIX
from taskexec.wire.masking import SecretsMasker

RUN = {
    "run_id": "manual__1",
    "logical_date": dt.datetime(2026, 3, 4, 5, 6, tzinfo=dt.UTC),
    "run_after": dt.datetime(2026, 3, 4, 5, 6, tzinfo=dt.UTC),
    "conf": {"who": "conf-wins"},
}


def _context(task: BaseTask, map_index: int = -1) -> dict[str, Any]:
    return rendering.build_context(task=task, dag_run=RUN, map_index=map_index, try_number=2)


def test_context_and_nested_fields_are_rendered() -> None:
    with Dag("d", params={"who": "default", "n": 3}):
        task = PythonTask(
            "t",
            python_callable=print,
            op_args=["{{ ds }}", ("{{ ts }}", ["{{ try_number }}"])],
            op_kwargs={"deep": {"list": ["{{ params.who }}", "{{ params.n * 2 }}", 7]}},
            templates_dict={"ids": "{{ dag_id }}.{{ task_id }}.{{ run_id }}.{{ map_index }}"},
        ).expand(["a", "b"])
    rendered = rendering.render_task(task, _context(task, map_index=1))
    assert rendered.op_args == ["2026-03-04", ("2026-03-04T05:06:00+00:00", ["2"])]
    assert rendered.op_kwargs == {"deep": {"list": ["conf-wins", "6", 7]}}
    assert rendered.templates_dict == {"ids": "d.t.manual__1.1"}
    assert task.op_args[0] == "{{ ds }}"  # the authored task is left alone


def test_mapped_item_is_in_the_context() -> None:
    with Dag("d"):
        task = BashTask("b", bash_command="echo {{ item.name }}").expand(
            [{"name": "x"}, {"name": "y"}]
        )
    assert rendering.render_task(task, _context(task, 1)).bash_command == "echo y"


@pytest.mark.parametrize(
    ("template", "needle"),
    [
        ("echo {{ nope }}", "'nope' is undefined"),
        ("echo {{ unclosed", "bash_command"),
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "unsafe"),
    ],
    ids=["undefined", "syntax", "sandbox"],
)
def test_template_errors_are_clear(template: str, needle: str) -> None:
    with Dag("d"):
        task = BashTask("b", bash_command=template)
    with pytest.raises(rendering.RenderError) as info:
        rendering.render_task(task, _context(task))
    assert needle in str(info.value)


def test_payload_masks_then_truncates() -> None:
    masker = SecretsMasker()
    masker.add_secret("registered-secret-1")
    with Dag("d"):
        task = BashTask(
            "b",
            bash_command="curl https://user:pw-in-url@example.com/x?t=registered-secret-1",
            env={"API_KEY": "k-123456", "NOTE": "x" * 5000},
        )
    payload = rendering.rendered_fields_payload(task, masker, max_length=200)
    assert payload["bash_command"] == "curl https://user:***@example.com/x?t=***"
    env = payload["env"]
    assert isinstance(env, str) and env.startswith(TRUNCATION_PREFIX) and len(env) == 200
    assert '"API_KEY":"***"' in env
    assert "k-123456" not in repr(payload)


def test_meta_names_renderers_and_truncation() -> None:
    with Dag("d"):
        task = BashTask("b", bash_command="echo hi", env={"NOTE": "x" * 5000})
    payload = rendering.rendered_fields_payload(task, SecretsMasker(), max_length=200)
    meta = rendering.rendered_fields_meta(task, payload, max_length=200)
    assert meta == {
        "bash_command": {"renderer": "bash"},
        "env": {"renderer": "json", "truncated_at": 200},
    }


def test_renderers_are_validated_and_overridable() -> None:
    with Dag("d"):
        task = PythonTask("p", python_callable=print, renderers={"templates_dict": "sql"})
        assert task.renderers["templates_dict"] == "sql"
        with pytest.raises(ValueError, match="unknown renderer"):
            PythonTask("q", python_callable=print, renderers={"op_args": "html"})
