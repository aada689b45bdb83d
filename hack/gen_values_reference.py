"""The README's chart configuration reference, generated from charts/sriovdra/values.yaml.

Every leaf key (a scalar, a list, or a map written inline or left empty) becomes a row: its dotted
path, its default and its comment: the one on its line, else the comment lines just above it.
Nested maps written as blocks (resources: requests: ...) are shown whole at the level their
comment describes, so that a row never splits what is set together.

    python hack/gen_values_reference.py           # print the table
    python hack/gen_values_reference.py --write   # replace it in README.md between the markers
tests/chart/test_values_reference.py fails when README.md is not what --write makes.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
VALUES = REPO / "charts" / "sriovdra" / "values.yaml"
README = REPO / "README.md"
START = "<!-- values-reference:start (hack/gen_values_reference.py --write) -->"
END = "<!-- values-reference:end -->"
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?P<rest>.*)$")
# maps shown as one row even when written as blocks: their keys are Kubernetes fields, not chart options
_WHOLE = {"resources", "securityContext", "podSecurityContext", "livenessProbe", "readinessProbe", "policy"}


def _comment(rest: str) -> str:
    """The inline comment of `key: value  # comment` (a '#' inside quotes is not one)."""
    m = re.search(r"\s#\s?(.*)$", rest)
    if not m or rest[:m.start()].count('"') % 2:
        return ""
    return m.group(1).strip()


def rows(text: str) -> list[tuple[str, str, str]]:
    values = yaml.safe_load(text)
    out: list[tuple[str, str, str]] = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing block maps
    above: list[str] = []  # full-line comments just above the current key
    skip_below: int | None = None  # inside a map shown whole
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            raw = stripped[1:].removeprefix(" ")
            if not raw.startswith((" ", "-")):  # indented comment lines are examples, not prose
                above.append(raw.strip())
            continue
        if not stripped:
            above = []
            continue
        m = _KEY.match(line)
        if not m:
            continue
        indent, key, rest = len(m["indent"]), m["key"], m["rest"]
        if skip_below is not None and indent > skip_below:
            continue
        skip_below = None
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [k for _, k in stack] + [key]
        value = _lookup(values, path)
        inline = rest.split("#")[0].strip()
        if isinstance(value, dict) and value and not inline and key not in _WHOLE:
            stack.append((indent, key))
            above = []
            continue
        if isinstance(value, dict) and not inline and key in _WHOLE:
            skip_below = indent
        described = _comment(rest) or " ".join(above).removesuffix("Example:").strip()
        out.append((".".join(path), _default(value), described))
        above = []
    return out


def _lookup(values: dict, path: list[str]):
    for key in path:
        values = values[key]
    return values


def _default(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return json.dumps(value)
    return json.dumps(value, separators=(", ", ": ")) if isinstance(value, (dict, list)) else str(value).lower() \
        if isinstance(value, bool) else str(value)


def table(text: str) -> str:
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, meaning in rows(text):
        meaning = meaning.replace("|", "&#124;").replace("<", "&lt;").replace(">", "&gt;")
        lines.append(f"| `{key}` | `{default}` | {meaning} |")
    return "\n".join(lines) + "\n"


def render_readme(readme: str, values_text: str) -> str:
    head, sep, rest = readme.partition(START)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise SystemExit(f"{README}: the markers {START!r} ... {END!r} are missing")
    return f"{head}{START}\n{table(values_text)}{END}{tail}"


def main(argv: list[str]) -> int:
    values_text = VALUES.read_text()
    if "--write" in argv:
        README.write_text(render_readme(README.read_text(), values_text))
    else:
        sys.stdout.write(table(values_text))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
