"""The sriovdra command line: a thin shell over the library.

`main` answers a bare `sriovdra --help` from a pre-rendered text (help.txt, kept equal to
typer's own rendering by a test), so the most common first command costs no typer import.
Everything else goes through the typer app in sriovdra.cli.app.
"""

import os
import sys

_HELP_FILE = os.path.join(os.path.dirname(__file__), "help.txt")


def main() -> None:
    if sys.argv[1:] in (["--help"], ["-h"]) and os.path.exists(_HELP_FILE):
        with open(_HELP_FILE) as f:
            sys.stdout.write(f.read())
        return
    from sriovdra.cli.app import app

    app(prog_name="sriovdra")
