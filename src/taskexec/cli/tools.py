"""``taskexec race`` and ``taskexec bench``: reproduce the RTIF race, measure the cost."""

from __future__ import annotations

import argparse

from taskexec.cli.common import CommandError
from taskexec.config import Settings


def _csv(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def _int_csv(raw: str) -> list[int]:
    try:
        return [int(part) for part in _csv(raw)]
    except ValueError as exc:
        message = f"{raw!r} is not a comma-separated list of integers"
        raise argparse.ArgumentTypeError(message) from exc


def cmd_race(args: argparse.Namespace, settings: Settings) -> None:
    """Race first writes per strategy, writers and database; write table, JSON, MD, PNG."""
    from taskexec.race import main as race_main

    try:
        race_main.race_command(args)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc


def cmd_bench(args: argparse.Namespace, settings: Settings) -> None:
    """Measure sustained RTIF writes, the raw ceiling, cost growth and server memory."""
    from taskexec.race import main as race_main

    try:
        race_main.bench_command(args)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``race`` and ``bench``."""
    _add_race(sub)
    _add_bench(sub)


def _add_race(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    race = sub.add_parser("race", help="reproduce the RTIF race and show it gone")
    race.add_argument("--strategies", type=_csv, default=["merge", "merge-retry", "upsert"])
    race.add_argument("--writers", type=_int_csv, default=[1, 8, 32, 64])
    race.add_argument("--rounds", type=int, default=20)
    race.add_argument("--db", type=_csv, default=["sqlite", "postgresql", "mysql"])
    race.add_argument("--variants", type=_csv, default=["first-write", "retry"])
    race.add_argument("--postgres-url", default=None, help="admin URL (default: env)")
    race.add_argument("--mysql-url", default=None, help="admin URL (default: env)")
    race.add_argument("--against", default=None, help="race this server instead")
    race.add_argument(
        "--targets",
        default=None,
        help="with --against: file of 'ti_id token' lines, or 'ti_id token dag_id run_id "
        "task_id map_index' (needed by --readback airflow)",
    )
    race.add_argument(
        "--readback",
        choices=("execution", "airflow"),
        default="execution",
        help="with --against: read the stored value back through GET "
        "/execution/task-instances/{id}/rtif (execution; Airflow has none) or Airflow's "
        "REST API /api/v2/dags/…/taskInstances/… (airflow) (default: %(default)s)",
    )
    race.add_argument(
        "--readback-url",
        default=None,
        help="base URL of Airflow's REST API for --readback airflow (default: --against)",
    )
    race.add_argument(
        "--readback-token",
        default=None,
        help="Bearer token for Airflow's REST API (default: $TASKEXEC_RACE_READBACK_TOKEN)",
    )
    race.add_argument("--out", default="artifacts/race", help="folder for JSON, MD, PNG")
    race.add_argument("--max-seconds", type=float, default=1800, help="stop starting cases after")
    race.set_defaults(func=cmd_race)


def _add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser("bench", help="measure RTIF write throughput and latency")
    bench.add_argument("--db", type=_csv, default=["sqlite", "postgresql", "mysql"])
    bench.add_argument("--clients", type=_int_csv, default=[1, 8, 32, 64])
    bench.add_argument("--modes", type=_csv, default=["distinct", "hot"])
    bench.add_argument("--payloads", type=_csv, default=["1KiB", "64KiB"])
    bench.add_argument("--seconds", type=float, default=5.0, help="per configuration")
    bench.add_argument("--growth", type=_int_csv, default=[1000, 100000, 1000000])
    bench.add_argument("--server-workers", type=int, default=2)
    bench.add_argument("--targets", type=int, default=2000, help="task instances to write to")
    bench.add_argument(
        "--strategies",
        type=_csv,
        default=["batched", "unbatched"],
        help="how the server stores writes, one server each: batched (group commit, the "
        "default) and unbatched (one transaction per write) (default: batched,unbatched)",
    )
    bench.add_argument(
        "--raw",
        type=_csv,
        default=["transaction", "autocommit"],
        help="raw ceilings without HTTP: transaction (BEGIN, upsert, COMMIT through "
        "SQLAlchemy) and autocommit (the same SQL through the driver, one round trip) "
        "(default: transaction,autocommit)",
    )
    bench.add_argument("--postgres-url", default=None, help="admin URL (default: env)")
    bench.add_argument("--mysql-url", default=None, help="admin URL (default: env)")
    bench.add_argument("--out", default="artifacts/bench")
    bench.set_defaults(func=cmd_bench)
