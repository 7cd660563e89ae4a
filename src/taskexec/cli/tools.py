"""``taskexec race`` and ``taskexec bench``: reproduce the RTIF race, measure the cost.

The choices are written out here rather than read from ``taskexec.race``, whose import
(the app, SQLAlchemy) would slow every ``taskexec`` command; a unit test keeps the two
lists equal."""

from __future__ import annotations

import argparse

from taskexec.cli import parsing
from taskexec.cli.common import CommandError, UsageError
from taskexec.config import Settings

# race.databases.BACKENDS, and mariadb, MySQL under its other name.
DATABASES = ("sqlite", "postgresql", "mysql", "mariadb")
RACE_STRATEGIES = ("merge", "merge-retry", "upsert")  # race.strategies.STRATEGIES
VARIANTS = ("first-write", "retry")  # race.command.VARIANTS
MODES = ("distinct", "hot")  # race.bench.MODES
PAYLOADS = ("1KiB", "64KiB")  # race.bench.PAYLOADS
BENCH_STRATEGIES = (
    "batched",
    "unbatched",
    "route",
    "busy-handler",
    "gc-unfrozen",
    "in-transaction",
    "via-sqlalchemy",
    "shared-socket",
)  # race.bench.STRATEGIES
RAW_CEILINGS = ("transaction", "autocommit")  # race.raw.KINDS

DB_HELP = (
    "databases to run on (default: sqlite, and postgresql and mysql where an admin URL "
    "is given by option or environment)"
)
URL_HELP = (
    "admin URL of a {what} server on which to create and drop throwaway databases "
    "(default: ${first}, else ${second})"
)


def _run_tool(command: str, args: argparse.Namespace) -> None:
    from taskexec.race import databases
    from taskexec.race import main as race_main

    try:
        if command == "race":
            race_main.race_command(args)
        else:
            race_main.bench_command(args)
    except databases.UnreachableError as exc:
        raise CommandError(str(exc)) from exc
    except databases.OptionError as exc:
        raise UsageError(str(exc)) from exc


def cmd_race(args: argparse.Namespace, settings: Settings) -> None:
    """Race first writes per strategy, writers and database; write table, JSON, MD, PNG."""
    _run_tool("race", args)


def cmd_bench(args: argparse.Namespace, settings: Settings) -> None:
    """Measure sustained RTIF writes, the raw ceiling, cost growth and server memory."""
    _run_tool("bench", args)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``race`` and ``bench``."""
    _add_race(sub)
    _add_bench(sub)


def _add_urls(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", **parsing.choice_list(DATABASES), default=None, help=DB_HELP)
    parser.add_argument(
        "--postgres-url",
        type=parsing.admin_url,
        default=None,
        help=URL_HELP.format(
            what="PostgreSQL",
            first="TASKEXEC_RACE_POSTGRES_URL",
            second="TASKEXEC_TEST_POSTGRES_URL",
        ),
    )
    parser.add_argument(
        "--mysql-url",
        type=parsing.admin_url,
        default=None,
        help=URL_HELP.format(
            what="MariaDB/MySQL", first="TASKEXEC_RACE_MYSQL_URL", second="TASKEXEC_TEST_MYSQL_URL"
        ),
    )


def _add_race(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    race = parsing.command(
        sub,
        "race",
        "reproduce the RTIF race and show it gone",
        "Is a server affected by the rendered-fields race, and what does the fix change? "
        "For every database, strategy and writer count it starts the app in-process on a "
        "fresh database, swaps in a write strategy, and releases W writers at once on one "
        "fresh task instance per round; then it checks the database holds one row with a "
        "2xx writer's value. It prints a table and writes race.json, race.md and, with "
        "matplotlib (taskexec[bench]), race.png to --out. --against races a server "
        "elsewhere instead.",
        [
            "taskexec race --db sqlite --rounds 5                  # a minute, no set-up",
            "taskexec race --db postgresql --postgres-url postgresql://postgres@127.0.0.1/test",
            "taskexec race --against http://my-server:8080 --targets targets.txt",
        ],
    )
    race.add_argument(
        "--strategies",
        **parsing.choice_list(RACE_STRATEGIES),
        default=",".join(RACE_STRATEGIES),
        help="write strategies: merge (Airflow up to 3.2), merge-retry "
        "(Airflow PR #63581), upsert (taskexec's)",
    )
    race.add_argument(
        "--writers",
        type=parsing.int_csv,
        default="1,8,32,64",
        help="writer counts, comma-separated",
    )
    race.add_argument("--rounds", type=parsing.positive, default=20, help="rounds per case")
    race.add_argument(
        "--variants",
        **parsing.choice_list(VARIANTS),
        default=",".join(VARIANTS),
        help="first-write (W different first writes) and retry (one PUT sent twice at once)",
    )
    _add_urls(race)
    _add_race_against(race)
    race.add_argument("--out", default="artifacts/race", help="folder for JSON, MD and PNG")
    race.add_argument(
        "--max-seconds",
        type=parsing.positive_float,
        default=1800.0,
        help="start no new case after this many seconds",
    )
    race.set_defaults(func=cmd_race)


def _add_race_against(race: argparse.ArgumentParser) -> None:
    race.add_argument(
        "--against", default=None, help="base URL of a server to race instead of in-process"
    )
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
        "REST API /api/v2/dags/…/taskInstances/… (airflow)",
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


def _add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = parsing.command(
        sub,
        "bench",
        "measure RTIF write throughput and latency",
        "Start `taskexec serve` on a fresh database and measure sustained rendered-fields "
        "writes (req/s, p50, p99, max) per client count, mode and payload, for the batched "
        "and unbatched server; the raw ceiling of the same upsert without HTTP; latency as "
        "the table grows; and the server's peak memory. It prints tables and writes "
        "bench.json, bench.md and, with matplotlib (taskexec[bench]), bench.png to --out.",
        [
            "taskexec bench --db sqlite --clients 1,8 --seconds 2 --growth 1000",
            "taskexec bench --db postgresql,mysql   # URLs from the environment",
        ],
    )
    _add_urls(bench)
    bench.add_argument(
        "--clients",
        type=parsing.int_csv,
        default="1,8,32,64",
        help="client counts, comma-separated",
    )
    bench.add_argument(
        "--modes",
        **parsing.choice_list(MODES),
        default=",".join(MODES),
        help="distinct (each client writes its own task instances) and hot (all write one)",
    )
    bench.add_argument(
        "--payloads",
        **parsing.choice_list(PAYLOADS),
        default=",".join(PAYLOADS),
        help="rendered-fields body sizes",
    )
    bench.add_argument(
        "--seconds", type=parsing.positive_float, default=5.0, help="per configuration"
    )
    bench.add_argument(
        "--growth",
        type=parsing.int_csv,
        default="1000,100000,1000000",
        help="table sizes (rows) at which to measure again, comma-separated",
    )
    bench.add_argument(
        "--server-workers", type=parsing.positive, default=2, help="`taskexec serve --workers`"
    )
    bench.add_argument(
        "--targets", type=parsing.positive, default=2000, help="task instances to write to"
    )
    _add_bench_servers(bench)
    bench.add_argument("--out", default="artifacts/bench", help="folder for JSON, MD and PNG")
    bench.set_defaults(func=cmd_bench)


def _add_bench_servers(bench: argparse.ArgumentParser) -> None:
    bench.add_argument(
        "--strategies",
        **parsing.choice_list(BENCH_STRATEGIES),
        default="batched,unbatched",
        help="how the server stores writes, one server each: batched (group commit behind "
        "the hot path, the default), unbatched (one transaction per write through "
        "FastAPI's route: the earlier design), route (group commit through FastAPI's "
        "route), busy-handler (batched, SQLite's writers left to its busy handler "
        "instead of the write queue), gc-unfrozen (batched, without gc.freeze), "
        "in-transaction (batched, PostgreSQL's batches through SQLAlchemy in BEGIN ... "
        "COMMIT), via-sqlalchemy (batched, PostgreSQL's batches through SQLAlchemy in "
        "autocommit, not straight to the driver) and shared-socket (batched, the "
        "workers on one listening socket)",
    )
    bench.add_argument(
        "--raw",
        **parsing.choice_list(RAW_CEILINGS),
        default=",".join(RAW_CEILINGS),
        help="raw ceilings without HTTP: transaction (BEGIN, upsert, COMMIT through "
        "SQLAlchemy) and autocommit (the same SQL through the driver, one round trip)",
    )
