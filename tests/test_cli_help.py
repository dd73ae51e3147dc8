"""Every command's --help: what it does, its arguments explained, its exit statuses."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest

from collector import cli, config


def commands() -> list[str]:
    """Every subcommand, so that one added later is held to the same rule."""
    action = next(a for a in cli.build_parser()._actions
                  if isinstance(a, argparse._SubParsersAction))
    return list(action.choices)


COMMANDS = commands()


def help_text(command: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "collector", command, "--help"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in cli.build_parser()._actions
                  if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_is_listed_with_a_summary():
    action = next(a for a in cli.build_parser()._actions
                  if isinstance(a, argparse._SubParsersAction))
    summaries = {c.dest: c.help for c in action._choices_actions}
    assert {"init", "run", "health", "demo", "simulate", "cat", "verify", "replay"} <= set(summaries)
    assert all(summaries[c] for c in COMMANDS), summaries


@pytest.mark.parametrize("command", COMMANDS)
def test_help_names_the_command_describes_it_and_gives_exit_statuses(command):
    text = help_text(command)
    assert text.startswith(f"usage: collector {command}"), text[:80]
    rest = text.partition("\n\n")[2]  # after the usage lines
    description = rest.split("\n\n", 1)[0]
    assert len(description.split()) >= 5, f"no description: {description!r}"
    assert re.search(r"exit\s+status:?\s+0\b", text, re.I), text
    assert re.search(r"\b2\b[\s:]+usage\s+error", text), "usage errors (argparse: 2) not named"


@pytest.mark.parametrize("command", [c for c in COMMANDS if c not in cli.FORWARDED])
def test_every_argument_of_the_commands_own_parsers_is_explained(command):
    parser = subparsers()[command]
    bare = [a.dest for a in parser._actions if not a.help]
    assert not bare, f"collector {command}: no help for {bare}"


def test_run_help_lists_every_exit_status_from_where_it_is_defined():
    from collector.ops.monitor import EX_SOFTWARE
    from collector.runtime.app import EX_LOCKED

    text = help_text("run")
    table = text.split("exit status:", 1)[1]
    for status in (0, 1, 2, EX_SOFTWARE, cli.EX_IOERR, EX_LOCKED, config.EX_CONFIG):
        assert re.search(rf"^  {status}\s+\S", table, re.M), (status, table)


def test_simulate_help_is_the_simulators_own_under_its_collector_name():
    from collector.sim.__main__ import build_parser

    parser = build_parser()
    assert parser.prog == "collector simulate"
    bare = [a.dest for a in parser._actions if not a.help]
    assert not bare, f"collector simulate: no help for {bare}"
    assert "--faults" in help_text("simulate")  # the simulator's options, through `collector`


def test_building_the_parser_does_not_import_the_daemon():
    # the exit-status table of `run` names constants of the daemon's modules: they are
    # imported only when --help prints it, not for every `collector health` a HEALTHCHECK runs
    code = ("import sys; from collector import cli; cli.build_parser(); "
            "print('collector.runtime.app' in sys.modules, 'collector.ops.monitor' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, check=True)
    assert proc.stdout.split() == ["False", "False"]
