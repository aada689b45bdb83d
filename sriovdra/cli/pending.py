"""Subcommands whose implementation lands in later issues: they say so and exit 3."""

from __future__ import annotations

from collections.abc import Callable

from sriovdra.cli.output import EXIT_NOT_IMPLEMENTED, die


def pending(name: str, what: str) -> Callable[[], None]:
    def command() -> None:
        die(f"`sriovdra {name}` is not implemented yet ({what}).", EXIT_NOT_IMPLEMENTED)

    command.__doc__ = f"{what[0].upper()}{what[1:]} (not implemented yet)."
    return command
