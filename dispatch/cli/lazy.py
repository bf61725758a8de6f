"""A command group whose commands are imported only when they are used.

Importing every command module up front pulled in SQLAlchemy, FastAPI,
uvicorn, Jinja2, slack-sdk, aiosmtpd and alembic for `dispatch --help`
(2.8 s on a shared machine). Here each command is named by "module:attribute"
with its one-line help; `dispatch --help` lists them from that table, and a
command's module is imported only when the command (or its own --help) runs.
tests/test_cli_imports.py holds the import graph and checks that every
table entry's help matches the command's own.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

from dispatch.cli.common import DispatchGroup


@dataclass(frozen=True)
class LazyCommand:
    target: str  # "dispatch.cli.run_cmds:run": a Typer app or a command function
    help: str  # the one line `dispatch --help` shows; must match the command's own


def load_command(name: str, entry: LazyCommand) -> TyperCommand | TyperGroup:
    module_name, _, attribute = entry.target.partition(":")
    obj = getattr(importlib.import_module(module_name), attribute)
    if isinstance(obj, typer.Typer):
        # As add_typer would: plain help text, no rich markup, like the parent.
        obj.rich_markup_mode = None
        command: TyperCommand | TyperGroup = typer.main.get_group(obj)
    else:
        single = typer.Typer(rich_markup_mode=None, add_completion=False)
        single.command(name)(obj)
        command = typer.main.get_command(single)
    command.name = name
    return command


class LazyGroup(DispatchGroup):
    """The top-level group: commands registered eagerly (cheap ones defined in
    dispatch.cli) first, then the lazy table in its order."""

    lazy_commands: dict[str, LazyCommand] = {}

    def list_commands(self, ctx: typer.Context) -> list[str]:
        eager = list(super().list_commands(ctx))
        return eager + [name for name in self.lazy_commands if name not in eager]

    def get_command(self, ctx: typer.Context, cmd_name: str):
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in self.lazy_commands:
            command = load_command(cmd_name, self.lazy_commands[cmd_name])
            self.add_command(command, cmd_name)  # loaded once per process
        return command

    def format_commands(self, ctx: typer.Context, formatter) -> None:
        # click's own listing, but from the table: no command module is imported.
        # The stand-ins are typer's own command class (the real commands' class,
        # whichever click typer is built on), so their short help is cut alike.
        rows = []
        for name in self.list_commands(ctx):
            command = self.commands.get(name) or TyperCommand(name, help=self.lazy_commands[name].help)
            if not command.hidden:
                rows.append((name, command))
        if rows:
            limit = formatter.width - 6 - max(len(name) for name, _ in rows)
            with formatter.section("Commands"):
                formatter.write_dl([(name, cmd.get_short_help_str(limit)) for name, cmd in rows])
