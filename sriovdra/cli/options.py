"""Options shared by several commands, and how they resolve to HostPaths."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Optional

import click
import typer

from sriovdra.host.ipam import DEFAULT_CNI_BIN_DIRS
from sriovdra.host.paths import HostPaths


# Path-valued options: shells complete file or directory names for them (click's path type); the
# value stays a str, and nothing is checked here that the command does not check with a better message.
FILE = click.Path(dir_okay=False)
DIR = click.Path(file_okay=False)
ANY_PATH = click.Path()


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    yaml = "yaml"


HostRoot = Annotated[Optional[str], typer.Option(
    "--host-root", click_type=DIR, envvar="SRIOVDRA_HOST_ROOT", metavar="PATH",
    help="Host root for /proc, /etc and /var files (default /); sysfs and dev default below it.")]
SysfsRoot = Annotated[Optional[str], typer.Option(
    "--sysfs-root", click_type=DIR, envvar="SRIOVDRA_SYSFS_ROOT", metavar="PATH",
    help="sysfs to read (default <host-root>/sys, i.e. /sys).")]
DevRoot = Annotated[Optional[str], typer.Option(
    "--dev-root", click_type=DIR, envvar="SRIOVDRA_DEV_ROOT", metavar="PATH",
    help="Where /dev lives (default <host-root>/dev, i.e. /dev).")]
Output = Annotated[OutputFormat, typer.Option(
    "--output", "-o", help="Output format; json and yaml are stable for scripts.")]
CniBinDir = Annotated[str, typer.Option(
    "--cni-bin-dir", envvar="SRIOVDRA_CNI_BIN_DIR",
    help="Colon-separated dirs of CNI IPAM plugins (VfConfig ipam).")]
DEFAULT_CNI_BIN_DIR = ":".join(DEFAULT_CNI_BIN_DIRS)


def cni_bin_dirs(value: str) -> tuple[str, ...]:
    return tuple(d for d in value.split(":") if d)


@dataclass(frozen=True)
class GlobalOptions:
    host_root: str | None = None
    sysfs_root: str | None = None
    dev_root: str | None = None


def host_paths(ctx: typer.Context, host_root: str | None, sysfs_root: str | None,
               dev_root: str | None) -> HostPaths:
    """A subcommand's own flags win over the ones given before the subcommand."""
    g = ctx.find_root().obj if isinstance(ctx.find_root().obj, GlobalOptions) else GlobalOptions()
    return HostPaths.resolve(host_root or g.host_root, sysfs_root or g.sysfs_root, dev_root or g.dev_root)
