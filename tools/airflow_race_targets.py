"""Targets for ``taskexec race --against`` a real Airflow 3 (run with Airflow's Python).

Creates runs of one of Airflow's dags with every task instance queued, straight through
Airflow's own models (no scheduler needed, and none should be running: it would hand
the tries to its executor), and prints one ``task_instance_id token dag_id run_id
task_id map_index`` line per task instance, with an Execution API token minted as
Airflow's executors mint them (``[api_auth] jwt_secret`` or its key file, audience
``[execution_api] jwt_audience``). Give the file to ``taskexec race --against
http://airflow:8080 --targets FILE --readback airflow``.

    AIRFLOW_HOME=... airflow-venv/bin/python tools/airflow_race_targets.py DAG_ID RUNS targets.txt

(Airflow logs to stdout, so the lines go to the file named last.)
"""

from __future__ import annotations

import sys
import uuid
from datetime import UTC, datetime


def main() -> None:
    from airflow.api_fastapi.auth.tokens import JWTGenerator, get_signing_args
    from airflow.configuration import conf
    from airflow.models.dagbag import DBDagBag
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    dag_id, runs, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    lines = []
    generator = JWTGenerator(
        valid_for=4 * 3600,
        audience=conf.get_mandatory_list_value("execution_api", "jwt_audience")[0],
        issuer=conf.get("api_auth", "jwt_issuer", fallback=None),
        **get_signing_args(make_secret_key_if_needed=False),
    )
    with create_session() as session:
        dag = DBDagBag().get_latest_version_of_dag(dag_id, session=session)
        if dag is None:
            sys.exit(f"dag {dag_id!r} is not serialized: run 'airflow dags reserialize'")
        for _ in range(runs):
            now = datetime.now(UTC)
            run = dag.create_dagrun(
                run_id=f"race__{uuid.uuid4().hex[:12]}",
                logical_date=None,
                run_after=now,
                run_type=DagRunType.MANUAL,
                triggered_by=DagRunTriggeredByType.TEST,
                state=DagRunState.RUNNING,
                session=session,
            )
            for ti in run.get_task_instances(session=session):
                ti.state = TaskInstanceState.QUEUED
                token = generator.generate(extras={"sub": str(ti.id)})
                key = f"{ti.dag_id} {ti.run_id} {ti.task_id} {ti.map_index}"
                lines.append(f"{ti.id} {token} {key}\n")
            session.commit()
    with open(out, "w") as targets:
        targets.writelines(lines)
    print(f"{len(lines)} task instances queued, written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
