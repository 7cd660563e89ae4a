"""Every ``taskexec`` command explains itself: each option and positional has help that
shows its default, each command a description and an example, through the parser object
itself (so a new option without help fails here)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from taskexec import __version__, cli
from taskexec.cli import parsing, tools

# cli/demo.py is another change's: its parser gets a description and an example there.
WITHOUT_DESCRIPTION_YET: set[str] = set()


def _parsers(
    parser: argparse.ArgumentParser,
) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and every subcommand's parser below it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                yield from _parsers(child)


def _arguments(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action._choices_actions  # the subcommands' one-line summaries
        else:
            yield action


PARSERS = list(_parsers(cli.build_parser()))


def _expanded_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    return parser._get_formatter()._expand_help(action)


def test_the_walk_finds_every_command() -> None:
    names = {p.prog for p in PARSERS}
    assert len(PARSERS) >= 20
    assert {
        "taskexec",
        "taskexec serve",
        "taskexec db upgrade",
        "taskexec dags list",
        "taskexec race",
        "taskexec bench",
        "taskexec celery-worker",
        "taskexec runs create",
        "taskexec tasks clear",
        "taskexec logs",
    } <= names


@pytest.mark.parametrize("parser", PARSERS, ids=lambda p: p.prog)
def test_every_option_and_positional_has_help(parser: argparse.ArgumentParser) -> None:
    missing = [
        "/".join(a.option_strings) or a.dest
        for a in _arguments(parser)
        if not (a.help and a.help.strip() and a.help != argparse.SUPPRESS)
    ]
    assert missing == [], f"{parser.prog}: no help for {missing}"


@pytest.mark.parametrize("parser", PARSERS, ids=lambda p: p.prog)
def test_every_default_is_shown(parser: argparse.ArgumentParser) -> None:
    for action in _arguments(parser):
        if not action.option_strings or action.default in (None, False, argparse.SUPPRESS):
            continue
        default = action.default
        shown = ",".join(map(str, default)) if isinstance(default, list) else str(default)
        assert shown in _expanded_help(parser, action), f"{parser.prog} {action.dest}"


@pytest.mark.parametrize("parser", PARSERS, ids=lambda p: p.prog)
def test_every_fixed_set_of_values_is_shown(parser: argparse.ArgumentParser) -> None:
    usage = parser.format_usage()
    for action in _arguments(parser):
        values = action.choices if action.option_strings else None
        if isinstance(action.type, parsing.CsvOf):
            values = action.type.choices
        for value in values or ():
            assert str(value) in usage, f"{parser.prog} {action.dest}: {value} not shown"


@pytest.mark.parametrize(
    "parser", [p for p in PARSERS if p.prog not in WITHOUT_DESCRIPTION_YET], ids=lambda p: p.prog
)
def test_every_command_has_a_description_and_an_example(parser: argparse.ArgumentParser) -> None:
    assert parser.description and len(parser.description.split()) >= 8, parser.prog
    assert parser.epilog and "  taskexec " in parser.epilog, parser.prog
    assert "The ``taskexec`` command" not in parser.description


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"taskexec {__version__}"
    assert cli.main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--port PORT" in out and "(default: 8080)" in out
    assert "{critical,error,warning,info,debug,trace}" in out


def test_long_descriptions_are_wrapped_and_examples_kept(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    assert cli.main(["serve", "--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "  taskexec serve --host 0.0.0.0 --port 8080 --workers 4" in lines


def test_the_cli_lists_match_the_race_modules() -> None:
    from taskexec.race import bench, command, databases, raw, strategies

    assert tuple(strategies.STRATEGIES) == tools.RACE_STRATEGIES
    assert tools.VARIANTS == command.VARIANTS
    assert tools.MODES == bench.MODES
    assert tuple(bench.PAYLOADS) == tools.PAYLOADS
    assert tuple(bench.STRATEGIES) == tools.BENCH_STRATEGIES
    assert tools.RAW_CEILINGS == raw.KINDS
    assert set(tools.DATABASES) == {*databases.BACKENDS, "mariadb"}


@pytest.mark.parametrize(
    ("raw", "ok"),
    [("1", True), ("65535", True), ("8080", True), ("0", False), ("-1", False), ("99999", False)],
)
def test_port_range(raw: str, ok: bool) -> None:
    if ok:
        assert parsing.port(raw) == int(raw)
    else:
        with pytest.raises(argparse.ArgumentTypeError, match="use 1-65535"):
            parsing.port(raw)


def test_csv_of_checks_each_part() -> None:
    kind = parsing.CsvOf(("a", "b"))
    assert kind("a, b") == ["a", "b"]
    with pytest.raises(argparse.ArgumentTypeError, match="'c' is not one of a, b"):
        kind("a,c")
    with pytest.raises(argparse.ArgumentTypeError, match="give one or more"):
        kind(",")
