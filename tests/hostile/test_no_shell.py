"""No shell is ever invoked with data from the host or a claim: the product's source (ast) has no
os.system / os.popen / exec / spawn / shell=True, and every subprocess call passes an argv list
literal (so that no string is ever split or interpreted by a shell)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "sriovdra"
GENERATED = ("plugin/proto", "nri/proto")
SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output", "getoutput", "getstatusoutput"}
FORBIDDEN = {("os", "system"), ("os", "popen"), ("os", "execv"), ("os", "execve"), ("os", "execvp"),
             ("os", "execvpe"), ("os", "execl"), ("os", "execle"), ("os", "execlp"), ("os", "execlpe"),
             ("os", "spawnv"), ("os", "spawnve"), ("os", "spawnvp"), ("os", "spawnvpe"), ("os", "spawnl"),
             ("os", "spawnle"), ("os", "spawnlp"), ("os", "spawnlpe"), ("os", "posix_spawn"), ("os", "posix_spawnp"),
             ("pty", "spawn"), ("asyncio", "create_subprocess_shell"), ("subprocess", "getoutput"),
             ("subprocess", "getstatusoutput")}


def _qualified(func: ast.expr, aliases: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
    """('subprocess', 'run') for subprocess.run(...) and for run(...) after `from subprocess import run`."""
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return func.value.id, func.attr
    if isinstance(func, ast.Name):
        return aliases.get(func.id)
    return None


def problems_in(source: str, name: str) -> list[str]:
    tree = ast.parse(source, name)
    aliases = {a.asname or a.name: (node.module, a.name) for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) and node.module for a in node.names}
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        where = f"{name}:{node.lineno}"
        for kw in node.keywords:
            if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                out.append(f"{where}: shell={ast.unparse(kw.value)}")
        q = _qualified(node.func, aliases)
        if q in FORBIDDEN:
            out.append(f"{where}: {'.'.join(q)}()")
        elif q is not None and q[0] == "subprocess" and q[1] in SUBPROCESS_CALLS:
            argv = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "args"), None)
            if not isinstance(argv, ast.List | ast.Tuple):
                out.append(f"{where}: subprocess.{q[1]}() argv is not a list literal: "
                           f"{ast.unparse(argv) if argv else '(none)'}")
    return out


def _sources() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if not any(g in p.relative_to(SRC).as_posix() for g in GENERATED))


def test_no_shell_and_only_argv_lists_in_the_product():
    found = [p for f in _sources() for p in problems_in(f.read_text(), str(f.relative_to(SRC.parent)))]
    assert found == []


def test_the_scan_sees_the_product_subprocess_calls():
    """The scan is not vacuous: the one subprocess call the product makes (CNI IPAM plugins) is found."""
    calls = [f for f in _sources() if "subprocess.run(" in f.read_text()]
    assert [f.name for f in calls] == ["ipam.py"]


@pytest.mark.parametrize("snippet, problem", [
    ("import subprocess\nsubprocess.run('ls ' + x, shell=True)", "shell=True"),
    ("import subprocess\nsubprocess.run(cmd)", "argv is not a list literal: cmd"),
    ("from subprocess import check_output as co\nco(f'ip link show {name}')", "argv is not a list literal"),
    ("import os\nos.system('echo ' + name)", "os.system()"),
    ("import os\nos.popen(x)", "os.popen()"),
    ("from os import execvp\nexecvp('sh', ['sh'])", "os.execvp()"),
    ("import subprocess\nsubprocess.Popen(['x'], shell=flag)", "shell=flag"),
])
def test_the_scan_catches_shells(snippet, problem):
    found = problems_in(snippet, "t.py")
    assert found and problem in found[0], found


def test_the_scan_accepts_argv_lists():
    assert problems_in("import subprocess\nsubprocess.run([b], input=x, shell=False)", "t.py") == []
