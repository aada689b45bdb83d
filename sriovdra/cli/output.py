"""Rendering command results (table, json, yaml) and turning errors into exit codes."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import NoReturn

import typer

from sriovdra.cli.options import OutputFormat

EXIT_FAILED = 1  # the command ran and found a failure (doctor FAIL)
EXIT_ERROR = 2  # bad input: flags, paths, files
EXIT_REFUSED = 4  # provision: claims hold VFs of a PF that would change (see --force)


def emit(data: dict, fmt: OutputFormat, table: Callable[[], str]) -> None:
    if fmt == OutputFormat.json:
        # Indented for people, compact (C encoder, 10x faster on a large node) for pipes.
        text = json.dumps(data, indent=2 if sys.stdout.isatty() else None) + "\n"
    elif fmt == OutputFormat.yaml:
        import yaml

        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    else:
        text = table()
        if not text.endswith("\n"):
            text += "\n"
    sys.stdout.write(text)


def tabulate(rows: list[list], headers: list[str], **kwargs) -> str:
    from tabulate import tabulate as _tabulate

    return _tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True, **kwargs)


def warn(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")


def die(message: str, code: int = EXIT_ERROR) -> NoReturn:
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(code)
