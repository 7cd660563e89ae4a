"""The argument parser every command shares: one-line usage errors (exit 2), help that
shows each option's default and valid values, and the value types the options use."""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from taskexec import config

# Exit statuses: a usage error (a bad option, argument or TASKEXEC_* value) and an
# environment error (a database, broker or file that is not as the command needs it).
USAGE = 2
ENVIRONMENT = 1


class HelpFormatter(argparse.HelpFormatter):
    """Paragraphs of one line are wrapped to the terminal, the others (examples, text
    laid out by hand) kept as written; each option's default at the end of its help,
    unless the help already says it or there is none to show (None, a flag)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for paragraph in text.split("\n\n"):
            if "\n" in paragraph.strip("\n"):
                paragraphs.append(textwrap.indent(paragraph, indent))
            else:
                paragraphs.append(super()._fill_text(paragraph, width, indent))
        return "\n\n".join(paragraphs)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or "default:" in text
            or default in (None, False, argparse.SUPPRESS)
            or not (action.option_strings or action.nargs in ("?", "*"))
        ):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr, naming the
    command and where its help is; its subcommands' parsers are of this class too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Print ``taskexec CMD: message (see …)`` and exit with the usage status."""
        print(f"{self.prog}: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(USAGE)


def command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    description: str,
    examples: Sequence[str],
) -> argparse.ArgumentParser:
    """A subcommand: ``summary`` in its group's list, ``description`` and ``examples``
    (command lines, with an optional ``  # comment``) in its own ``--help``."""
    epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples)
    return sub.add_parser(name, help=summary, description=description, epilog=epilog)


def group(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    description: str,
    examples: Sequence[str],
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """A command group (``db``, ``runs``…) whose subcommands are added to the result."""
    parser = command(sub, name, summary, description, examples)
    return parser.add_subparsers(required=True, title="commands", metavar="COMMAND")


def int_range(low: int, high: int | None = None, what: str = "a number") -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` to ``high`` (no upper bound if None)."""
    span = f"{low} or more" if high is None else f"{low}-{high}"

    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{raw!r} is not {what}: use {span}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is out of range: use {span}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


# A TCP port to listen on: 0 ("any free port") is refused, since the server announces
# the port it was given, and the workers reach it there.
port = int_range(1, 65535, "a port")
positive = int_range(1)


def positive_float(raw: str) -> float:
    """An argparse type: a number of seconds above 0."""
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{raw} must be above 0")
    return value


def csv(raw: str) -> list[str]:
    """The non-empty parts of a comma-separated list."""
    return [part.strip() for part in raw.split(",") if part.strip()]


class CsvOf:
    """An argparse type: a comma-separated list, each part one of ``choices``."""

    def __init__(self, choices: Sequence[str]) -> None:
        self.choices = tuple(choices)
        self.__name__ = "list"  # argparse names the type in some messages

    def __call__(self, raw: str) -> list[str]:
        """The parts of ``raw``, each checked."""
        parts = csv(raw)
        if not parts:
            raise argparse.ArgumentTypeError(f"give one or more of {', '.join(self.choices)}")
        for part in parts:
            if part not in self.choices:
                message = f"{part!r} is not one of {', '.join(self.choices)}"
                raise argparse.ArgumentTypeError(message)
        return parts

    def metavar(self) -> str:
        """``{a,b}[,...]``: the values and that several may be given."""
        return "{" + ",".join(self.choices) + "}[,...]"


def choice_list(choices: Sequence[str]) -> dict[str, Any]:
    """``type`` and ``metavar`` of an option that takes a comma-separated list of
    ``choices``: ``parser.add_argument("--db", **choice_list(DATABASES), ...)``."""
    kind = CsvOf(choices)
    return {"type": kind, "metavar": kind.metavar()}


def int_csv(raw: str) -> list[int]:
    """An argparse type: a comma-separated list of integers of 1 or more."""
    try:
        values = [int(part) for part in csv(raw)]
    except ValueError:
        message = f"{raw!r} is not a comma-separated list of integers"
        raise argparse.ArgumentTypeError(message) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{raw!r}: give integers of 1 or more")
    return values


def admin_url(raw: str) -> str:
    """An argparse type: a PostgreSQL or MySQL/MariaDB URL (the race's admin URLs)."""
    problem = config.database_url_problem(raw)
    if problem is None and raw.startswith("sqlite"):
        problem = "give a postgresql:// or mysql:// URL"
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return raw
