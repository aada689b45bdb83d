"""Shell completion: the scripts in completions/ and the answer to their callback.

The scripts are click's own (bash, zsh, fish), rendered from the real command tree. Each calls
`sriovdra` back with _SRIOVDRA_COMPLETE=<shell>_complete (click's protocol) and COMP_WORDS/COMP_CWORD.
typer would read that variable in its own reversed order (complete_bash) and, with add_completion=False,
ships no script for it, so `sriovdra.cli.main` hands the variable to `answer` before typer runs.

Regenerate the committed scripts with: python -m sriovdra.cli.completions completions
"""

from __future__ import annotations

import os
import sys

PROG = "sriovdra"
COMPLETE_VAR = "_SRIOVDRA_COMPLETE"
# Where each shell looks: bash-completion's completions dir takes the command's name, zsh's fpath
# wants `_<command>`, fish's completions dir `<command>.fish`.
SCRIPT_FILES = {"bash": "sriovdra.bash", "zsh": "_sriovdra", "fish": "sriovdra.fish"}
ACTIONS = ("complete", "source")


class CompletionError(ValueError):
    """A completion instruction or shell we do not answer."""


def _completer(shell: str):
    """click's completer for `shell`, over the real command tree (never typer's replacements)."""
    import typer
    from click.shell_completion import BashComplete, FishComplete, ZshComplete

    from sriovdra.cli.app import app

    classes = {"bash": BashComplete, "zsh": ZshComplete, "fish": FishComplete}
    if shell not in classes:
        raise CompletionError(f"shell {shell!r}: not supported (one of {', '.join(classes)})")
    return classes[shell](typer.main.get_command(app), {}, PROG, COMPLETE_VAR)


def script(shell: str) -> str:
    """The completion script for `shell`, as committed in completions/."""
    return _completer(shell).source().rstrip("\n") + "\n"


def answer(instruction: str) -> str:
    """What the script's callback prints for `instruction` (<shell>_complete or <shell>_source)."""
    shell, _, action = instruction.partition("_")
    if action not in ACTIONS:
        raise CompletionError(f"{COMPLETE_VAR}={instruction}: want <shell>_complete or <shell>_source")
    completer = _completer(shell)
    return script(shell) if action == "source" else completer.complete() + "\n"


def write_scripts(directory: str) -> list[str]:
    """Write every shell's script into `directory`; returns the paths written."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for shell, name in SCRIPT_FILES.items():
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write(script(shell))
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_scripts(sys.argv[1] if len(sys.argv) > 1 else "completions"):
        print(written)
