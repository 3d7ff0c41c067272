"""Entry point. Each subcommand lives in nucleus/commands/<name>.py and is imported only when used,
so `nucleus segment` does not pay for Flask and `nucleus token` does not pay for torch."""
from __future__ import annotations

import importlib

import click

COMMANDS = {
    "up": "nucleus.commands.up:up",
    "segment": "nucleus.commands.segment:segment",
    "evaluate": "nucleus.commands.evaluate:evaluate",
    "train": "nucleus.commands.train:train",
    "db": "nucleus.commands.db:db",
    "token": "nucleus.commands.token:token",
    "ingest": "nucleus.commands.ingest:ingest",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                return None
            raise


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """nucleus: find, count and measure cell nuclei in microscope images."""


if __name__ == "__main__":
    main()
