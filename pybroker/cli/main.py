"""The ``pybroker`` command: a click group whose sub-commands are imported on first use.

Each verb lives in its own module (``pybroker/cli/<verb>.py``) exposing a click command (or group)
named in ``COMMANDS``; importing lazily keeps ``pybroker --help`` and start-up fast.
"""

from __future__ import annotations

import importlib
import sys

import click

# verb -> "module:attribute"
COMMANDS: dict[str, str] = {
    "create": "pybroker.cli.create:create",
    "run": "pybroker.cli.run:run",
    "stop": "pybroker.cli.run:stop",
    "producer": "pybroker.cli.messages:producer",
    "consumer": "pybroker.cli.messages:consumer",
    "data": "pybroker.cli.data:data",
    "perf": "pybroker.cli.perf:perf",
    "status": "pybroker.cli.status:status",
}


class LazyGroup(click.Group):
    """A click group that imports a sub-command's module only when it is invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:
                return None
            raise
        return getattr(module, attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pybroker")
def cli() -> None:
    """pybroker: an asyncio message broker with Artemis shared-store HA."""


def main() -> None:
    """Console-script entry point."""
    sys.exit(cli.main(standalone_mode=True))


if __name__ == "__main__":
    main()
