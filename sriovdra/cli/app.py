"""The typer application: global options and the subcommand tree."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from sriovdra import __version__
from sriovdra.cli.cdi import generate_command
from sriovdra.cli.checkpoint import show_command
from sriovdra.cli.discover import discover_command
from sriovdra.cli.doctor import doctor_command
from sriovdra.cli.options import DevRoot, GlobalOptions, HostRoot, SysfsRoot
from sriovdra.cli.provision import provision_command
from sriovdra.cli.serve import serve_command
from sriovdra.cli.webhook import webhook_command

_SETTINGS = {"help_option_names": ["-h", "--help"], "terminal_width": 80, "max_content_width": 80}


def _typer(**kwargs) -> typer.Typer:
    return typer.Typer(rich_markup_mode=None, pretty_exceptions_enable=False, no_args_is_help=True,
                       context_settings=_SETTINGS, **kwargs)


app = _typer(name="sriovdra", add_completion=False,
             help="Kubernetes DRA driver for SR-IOV virtual functions and InfiniBand devices.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sriovdra {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    host_root: HostRoot = None,
    sysfs_root: SysfsRoot = None,
    dev_root: DevRoot = None,
    version: Annotated[Optional[bool], typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = None,
) -> None:
    """Kubernetes DRA driver for SR-IOV virtual functions and InfiniBand devices."""
    ctx.obj = GlobalOptions(host_root=host_root, sysfs_root=sysfs_root, dev_root=dev_root)


app.command("serve")(serve_command)
app.command("discover")(discover_command)
app.command("provision")(provision_command)
cdi = _typer(help="Container Device Interface specs.")
cdi.command("generate")(generate_command)
app.add_typer(cdi, name="cdi")
checkpoint = _typer(help="The driver's persisted state.")
checkpoint.command("show")(show_command)
app.add_typer(checkpoint, name="checkpoint")
app.command("doctor")(doctor_command)
app.command("webhook")(webhook_command)


def render_root_help() -> str:
    """What `sriovdra --help` prints; help.txt must equal this (tests/cli checks it)."""
    import click

    command = typer.main.get_command(app)
    with click.Context(command, info_name="sriovdra", **_SETTINGS) as ctx:
        return command.get_help(ctx) + "\n"


if __name__ == "__main__":
    import sys

    sys.stdout.write(render_root_help())
