"""Entry point. Each subcommand lives in nucleus/commands/<name>.py and is imported only when used,
so `nucleus segment` does not pay for Flask and `nucleus token` does not pay for torch. `nucleus --help`
imports none of them: the one-line help of each command is kept here."""
from __future__ import annotations

import importlib

import click

# name -> (module:attribute, one-line help shown by `nucleus --help`)
COMMANDS = {
    "up": ("nucleus.commands.up:up", "Run API, workers, trainer and sweeper in the foreground until Ctrl-C."),
    "segment": ("nucleus.commands.segment:segment", "Segment images or folders locally, no server needed."),
    "evaluate": ("nucleus.commands.evaluate:evaluate", "Score a model on a labelled data set."),
    "train": ("nucleus.commands.train:train", "Train a model; rerun the same command to resume."),
    "db": ("nucleus.commands.db:db", "The database schema."),
    "token": ("nucleus.commands.token:token", "API tokens."),
    "ingest": ("nucleus.commands.ingest:ingest", "Watch a folder and upload each new image once."),
    "dataset": ("nucleus.commands.dataset:dataset", "Labelled sets (build from sources, import, list)."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name][0].split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                return None
            raise

    def format_commands(self, ctx, formatter):
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in self.list_commands(ctx)])


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nucleus")
    except PackageNotFoundError:
        return "unknown"


def _print_version(ctx, _param, value):
    if value and not ctx.resilient_parsing:
        click.echo(f"nucleus {_version()}")
        ctx.exit()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Print the version and exit.")
def main():
    """nucleus: find, count and measure cell nuclei in microscope images."""


if __name__ == "__main__":
    main()
