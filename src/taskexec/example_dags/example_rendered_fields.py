"""The bundled example dag that ``taskexec demo`` runs:
``extract >> transform (x200) >> [load, report]``, and ``flaky`` on its own.

- ``transform`` is mapped over 200 shards: the fan-out that produced the collisions of
  Airflow #61705. It starts once ``extract`` succeeded; ``load`` and ``report`` once all
  200 shards did.
- ``extract`` (bash) and ``report`` (python) render templates from params and the run.
- ``load`` carries a secret in three ways: under a sensitive name (``DB_PASSWORD``),
  as a registered secret, and inside a connection URL; none may reach the database.
- ``flaky`` fails on its first try and succeeds on the retry, a second later.
- ``report``'s rendered ``templates_dict`` lists every shard it read: longer than
  ``max_templated_field_length`` (4096), so the worker truncates it and the web page
  marks it so.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from taskexec.sdk import BashTask, Dag, PythonTask, TaskFailedError, mask_secret

WAREHOUSE_PASSWORD = "s3cr3t-warehouse-pw"
mask_secret(WAREHOUSE_PASSWORD)


def transform_shard(shard: int, source: str, context: dict[str, Any]) -> int:
    """Pretend to transform one shard."""
    print(f"transforming shard {shard} of {source} (try {context['try_number']})")
    return shard * 2


def fail_first_try(context: dict[str, Any]) -> str:
    """Fail on try 1, succeed on try 2: shows a retry with a new task-instance id."""
    if context["try_number"] == 1:
        raise TaskFailedError("first try fails on purpose")
    return "ok"


def build_report(templates_dict: dict[str, Any]) -> None:
    """Print the rendered query."""
    print(templates_dict["query"])


with Dag(
    "example_rendered_fields",
    params={"source": "s3://raw-bucket/events", "shards": 200, "owner": "data-eng"},
) as dag:
    extract = BashTask(
        "extract",
        bash_command="echo extracting {{ params.source }} for {{ ds }} in run {{ run_id }}",
        env={"RUN_ID": "{{ run_id }}", "OWNER": "{{ params.owner }}"},
    )
    transform = PythonTask(
        "transform",
        python_callable=transform_shard,
        op_kwargs={"shard": "{{ item }}", "source": "{{ params.source }}/part-{{ item }}"},
    ).expand(range(200))
    load = BashTask(
        "load",
        bash_command=(
            "echo loading into postgresql://loader:" + WAREHOUSE_PASSWORD + "@warehouse:5432/dw"
            " > /dev/null && echo loaded {{ ds }}"
        ),
        env={"DB_PASSWORD": WAREHOUSE_PASSWORD, "TARGET": "dw.events_{{ ds_nodash }}"},
    )
    PythonTask(
        "flaky", python_callable=fail_first_try, retries=1, retry_delay=dt.timedelta(seconds=1)
    )
    report = PythonTask(
        "report",
        python_callable=build_report,
        templates_dict={
            "query": "SELECT count(*) FROM dw.events WHERE ds = '{{ ds }}' -- run {{ run_id }}",
            "inputs": (
                "{% for i in range(params.shards) %}{{ params.source }}/part-{{ i }} {% endfor %}"
            ),
        },
    )
    extract >> transform >> [load, report]
