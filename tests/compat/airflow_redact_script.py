"""Run inside the task SDK's virtualenv: Airflow's own ``redact`` (the secrets masker its
task runner applies to rendered fields) over each ``[name, value]`` case read as JSON
from stdin; prints the results as one JSON list."""

from __future__ import annotations

import json
import sys

from airflow.sdk._shared.secrets_masker import redact


def main() -> None:
    cases = json.load(sys.stdin)
    # JSON has no tuples: Airflow's tuples (from sets and tuples) print as lists.
    print(json.dumps([redact(value, name) for name, value in cases]))


if __name__ == "__main__":
    main()
