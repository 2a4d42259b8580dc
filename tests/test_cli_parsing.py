"""The admin command's parser: options anywhere, and errors that name what was typed.

In-process, no database: argparse alone decides these.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pypireg.admin.cli import build_parser


@pytest.mark.parametrize("argv", [
    ["--json", "project", "list"],
    ["project", "list", "--json"],
    ["project", "--json", "list"],
])
def test_json_is_accepted_before_between_and_after_the_subcommands(argv: list[str]) -> None:
    assert build_parser().parse_args(argv).json is True


@pytest.mark.parametrize("argv", [
    ["--config", "a.toml", "user", "token", "list", "alice"],
    ["user", "token", "list", "alice", "--config", "a.toml"],
    ["user", "-c", "a.toml", "token", "list", "alice"],
])
def test_config_is_accepted_at_every_level(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert args.config == Path("a.toml") and args.json is False


def test_an_option_given_before_is_not_undone_by_the_subcommands_defaults() -> None:
    # argparse copies a subparser's namespace over its parent's: a default
    # there would reset what the user gave further left.
    args = build_parser().parse_args(["--json", "-c", "a.toml", "project", "update", "p"])
    assert args.json is True and args.config == Path("a.toml")
    # The rightmost wins, as with any repeated option.
    assert build_parser().parse_args(["-c", "a", "project", "list", "-c", "b"]).config == Path("b")


def test_an_option_named_like_a_subcommand_keeps_its_value() -> None:
    # `--group` is an option of `namespace grant`; no subcommand name is
    # stored under `group` to overwrite it.
    args = build_parser().parse_args(["namespace", "grant", "--group", "acme", "acme-"])
    assert args.group == "acme"
    assert build_parser().parse_args(["namespace", "grant", "--project", "p", "x-"]).group is None


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The one line the parser prints to stderr for *argv*; it must exit 2."""
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(list(argv))
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


@pytest.mark.parametrize(("argv", "line"), [
    (["project", "lst"],
     "pypireg project: invalid choice 'lst' (choose from create, list, update)"),
    (["user", "token", "revoke"],
     "pypireg user token: invalid choice 'revoke' (choose from create, list)"),
    (["projct", "list"], "pypireg: invalid choice 'projct' (choose from init, project, group, "),
    (["project"], "pypireg project: choose a subcommand (create, list, update)"),
    (["user", "token"], "pypireg user token: choose a subcommand (create, list)"),
    ([], "pypireg: choose a subcommand (init, project, group, "),
    (["project", "list", "--bogus"], "pypireg project list: unrecognized arguments: --bogus"),
    (["token", "create", "--project", "x", "--scope", "admin"],
     "pypireg token create: --scope: invalid choice 'admin' (choose from read, write)"),
    (["user", "token", "create"],
     "pypireg user token create: the following arguments are required: username, --scope"),
])
def test_usage_errors_name_the_subcommand_path_typed(
        capsys: pytest.CaptureFixture[str], argv: list[str], line: str) -> None:
    printed = usage_error(capsys, *argv)
    assert printed.startswith(line), printed
    # The names argparse stores choices under never reach the user.
    assert "argument group" not in printed and "argument command" not in printed
