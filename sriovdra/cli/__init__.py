"""The sriovdra command line: a thin shell over the library.

`main` answers a bare `sriovdra --help` from a pre-rendered text (help.txt, kept equal to
typer's own rendering by a test), so the most common first command costs no typer import.
Shell completion callbacks (_SRIOVDRA_COMPLETE set by the scripts in completions/) go to
sriovdra.cli.completions, which speaks click's protocol. Everything else goes through the typer
app in sriovdra.cli.app.
"""

import os
import sys

_HELP_FILE = os.path.join(os.path.dirname(__file__), "help.txt")


def main() -> None:
    instruction = os.environ.get("_SRIOVDRA_COMPLETE")
    if instruction:
        _complete(instruction)
    if sys.argv[1:] in (["--help"], ["-h"]) and os.path.exists(_HELP_FILE):
        with open(_HELP_FILE) as f:
            sys.stdout.write(f.read())
        return
    from sriovdra.cli.app import app

    app(prog_name="sriovdra")


def _complete(instruction: str) -> None:
    from sriovdra.cli.completions import CompletionError, answer

    try:
        sys.stdout.write(answer(instruction))
    except CompletionError as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(2)
    sys.exit(0)
