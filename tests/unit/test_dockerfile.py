"""The Dockerfile installs this package: its steps are parsed and checked against pyproject.toml, and
the wheel is built exactly as the build stage builds it (same command, from the same build context
after .dockerignore), offline. No image is built: no base image can be pulled here."""

from __future__ import annotations

import ast
import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

import sriovdra

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


# --- a small Dockerfile reader: instructions, stages, ARG substitution ---------------------------

@dataclass
class Stage:
    image: str  # FROM's image, ARGs substituted
    name: str | None
    steps: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, rest), in order

    def args(self) -> dict[str, str]:
        defaults = {}
        for rest in self.all("ARG"):
            name, _, value = rest.partition("=")
            defaults[name.strip()] = value.strip().strip('"')
        return defaults

    def all(self, instruction: str) -> list[str]:
        return [rest for ins, rest in self.steps if ins == instruction]

    def run_with(self, word: str) -> str:
        """The one RUN whose command contains `word`, with the stage's ARG defaults substituted."""
        runs = [r for r in self.all("RUN") if word in r]
        assert len(runs) == 1, f"stage {self.name or self.image}: expected one RUN with {word!r}, got {runs}"
        return substitute(runs[0], self.args())


def substitute(text: str, args: dict[str, str]) -> str:
    def value(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        assert name in args, f"${name} has no ARG default"
        return args[name]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, text)


def instructions(text: str) -> list[tuple[str, str]]:
    out, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if pending and line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction is dropped, as Docker does
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        ins, _, rest = (pending + line).strip().partition(" ")
        out.append((ins.upper(), rest.strip()))
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def stages(text: str) -> tuple[dict[str, str], list[Stage]]:
    global_args, result = {}, []
    for ins, rest in instructions(text):
        if ins == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            result.append(Stage(substitute(words[0], global_args), name))
        elif not result:
            assert ins == "ARG", f"only ARG may come before the first FROM, got {ins}"
            name, _, value = rest.partition("=")
            global_args[name.strip()] = substitute(value.strip(), global_args)  # as docker expands ARG defaults
        else:
            result[-1].steps.append((ins, rest))
    return global_args, result


def canonical(requirement: str) -> tuple[str, str]:
    r = Requirement(requirement)
    return r.name.lower(), str(r.specifier)


def exec_form(rest: str) -> list[str]:
    value = json.loads(rest)  # exec form: no shell between the runtime and the program
    assert isinstance(value, list) and all(isinstance(w, str) for w in value), rest
    return value


# --- .dockerignore, with Docker's rules: last matching pattern wins; a match on a parent dir counts --

def _pattern_regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        else:
            c = pattern[i]
            out += "[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c)
            i += 1
    return re.compile(out + r"\Z")


def ignore_rules() -> list[tuple[bool, re.Pattern]]:
    rules = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keep = line.startswith("!")
            rules.append((keep, _pattern_regex(os.path.normpath(line.lstrip("!")).lstrip("/"))))
    return rules


def ignored(path: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for keep, regex in rules:
        if any(regex.match(p) for p in prefixes):
            result = not keep
    return result


# --- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dockerfile():
    global_args, all_stages = stages((REPO / "Dockerfile").read_text())
    assert len(all_stages) == 2, "expected a build stage and a runtime stage"
    return global_args, all_stages[0], all_stages[1]


@pytest.fixture(scope="module")
def context(tmp_path_factory, dockerfile):
    """The build stage's WORKDIR as Docker fills it: its COPY sources from the context left by .dockerignore."""
    _, build, _ = dockerfile
    rules, workdir = ignore_rules(), tmp_path_factory.mktemp("context")
    for rest in build.all("COPY"):
        *sources, dest = rest.split()
        assert not any(s.startswith("--") for s in sources), f"COPY {rest}: the build stage copies from the context"
        for source in sources:
            assert not ignored(source, rules), f"COPY {source}: .dockerignore leaves it out of the context"
            src, target = REPO / source, workdir / dest
            if src.is_dir():  # Docker copies a directory's contents into dest
                for path in sorted(src.rglob("*")):
                    if path.is_file() and not ignored(path.relative_to(REPO).as_posix(), rules):
                        out = target / path.relative_to(src)
                        out.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(path, out)
            else:
                shutil.copy2(src, target / src.name if dest.endswith("/") else target)
    return workdir


@pytest.fixture(scope="module")
def wheel(tmp_path_factory, dockerfile, context) -> Path:
    """The wheel, built by the build stage's own `pip wheel` command (pip of this interpreter, offline)."""
    _, build, _ = dockerfile
    argv = shlex.split(build.run_with("pip wheel"))
    assert argv[:2] == ["pip", "wheel"], argv
    wheel_dir = argv[argv.index("--wheel-dir") + 1]
    out = tmp_path_factory.mktemp("wheels")
    argv = [sys.executable, "-m", "pip", *argv[1:]]
    argv[argv.index(wheel_dir)] = str(out)
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    proc = subprocess.run(argv, cwd=context, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    built = list(out.iterdir())
    assert len(built) == 1, built
    return built[0]


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory, wheel) -> Path:
    """The wheel's files as pip lays them into site-packages (a pure wheel is a zip of them)."""
    site = tmp_path_factory.mktemp("site")
    zipfile.ZipFile(wheel).extractall(site)
    return site


def run_console_script(unpacked: Path, entry: str, *args: str) -> subprocess.CompletedProcess:
    """Run `entry` (module:function) from the unpacked wheel as the console script would, with argv."""
    module, function = entry.split(":")
    code = (f"import sys; import {module} as m; assert m.__file__.startswith({str(unpacked)!r}), m.__file__; "
            f"sys.argv = ['sriovdra', *{list(args)!r}]; m.{function}()")
    env = {**os.environ, "PYTHONPATH": str(unpacked), "COLUMNS": "100"}
    return subprocess.run([sys.executable, "-c", code], cwd=unpacked, env=env, capture_output=True, text=True)


def wheel_entry_points(unpacked: Path) -> configparser.ConfigParser:
    (dist_info,) = unpacked.glob("*.dist-info")
    parser = configparser.ConfigParser()
    parser.read(dist_info / "entry_points.txt")
    return parser


def runtime_install(runtime: Stage) -> tuple[dict[str, str], list[str]]:
    """(the wheel-dir mounted from the build stage, the pip install arguments) of the runtime stage."""
    argv = shlex.split(runtime.run_with("pip install"))
    mounts = [a for a in argv if a.startswith("--mount=")]
    assert len(mounts) == 1, f"runtime pip install: expected one --mount of the build stage's wheels, got {argv}"
    opts = dict(kv.split("=", 1) for kv in mounts[0].removeprefix("--mount=").split(","))
    argv = [a for a in argv if not a.startswith("--mount=")]
    assert argv[:2] == ["pip", "install"], argv
    assert opts["type"] == "bind" and opts["source"] == opts["target"], opts
    return opts, argv[2:]


# --- tests --------------------------------------------------------------------------------------

def test_base_images_are_one_python_that_requires_python_allows(dockerfile):
    global_args, build, runtime = dockerfile
    assert build.image == runtime.image, "the wheel is built and installed on the same Python"
    m = re.fullmatch(r"python:(\d+\.\d+)(?:\.\d+)?-slim(?:-\w+)?", runtime.image)
    assert m, f"runtime base {runtime.image}: expected an official python:X.Y-slim image"
    assert m.group(1) in SpecifierSet(PROJECT["requires-python"]), (runtime.image, PROJECT["requires-python"])
    assert global_args["PYTHON_VERSION"] == m.group(1)


def test_version_args_and_labels_match_the_package(dockerfile):
    _, build, runtime = dockerfile
    version = PROJECT["version"]
    assert build.args()["VERSION"] == runtime.args()["VERSION"] == version == sriovdra.__version__
    labels = dict(re.findall(r'(org\.opencontainers\.image\.\w+)="([^"]*)"', " ".join(runtime.all("LABEL"))))
    assert substitute(labels["org.opencontainers.image.version"], runtime.args()) == version
    assert labels["org.opencontainers.image.licenses"] == PROJECT["license"]["text"]
    assert labels["org.opencontainers.image.description"] == PROJECT["description"]
    assert labels["org.opencontainers.image.title"] == PROJECT["name"]
    # A VERSION build-arg the package does not hold must fail the build, not mislabel the image.
    assert build.run_with("test -f").split()[2] == f'"/wheels/sriovdra-{version}-py3-none-any.whl"'


def test_build_stage_installs_the_build_system_requires(dockerfile):
    _, build, _ = dockerfile
    argv = shlex.split(build.run_with("pip install"))
    assert argv[:2] == ["pip", "install"] and sorted(argv[2:]) == sorted(PYPROJECT["build-system"]["requires"])
    assert "--no-build-isolation" in shlex.split(build.run_with("pip wheel")), \
        "the wheel must build with the requires installed above (no index needed)"


def test_dockerignore_sends_only_what_the_build_needs():
    rules = ignore_rules()
    for kept in ("pyproject.toml", "README.md", "sriovdra/cli/help.txt", "sriovdra/plugin/proto/dra_v1_pb2.py"):
        assert not ignored(kept, rules), kept
    for dropped in (".git/HEAD", ".venv/bin/python", "tests/conftest.py", "sriovdra/__pycache__/model.cpython-311.pyc",
                    "sriovdra.egg-info/PKG-INFO", "build/lib/sriovdra/model.py", "demo/hosts/mixed.yaml", "Dockerfile"):
        assert ignored(dropped, rules), dropped


def test_the_wheel_is_the_one_the_runtime_stage_installs(dockerfile, wheel):
    _, build, runtime = dockerfile
    opts, install = runtime_install(runtime)
    wheel_dir = shlex.split(build.run_with("pip wheel"))
    assert opts["from"] == build.name and opts["source"] == wheel_dir[wheel_dir.index("--wheel-dir") + 1]
    assert install == [f"{opts['source']}/{wheel.name}"], "the runtime installs exactly that wheel (and its deps)"
    assert wheel.name == f"{PROJECT['name']}-{PROJECT['version']}-py3-none-any.whl"


def test_the_wheel_holds_every_module_and_data_file(unpacked):
    # Everything the package reads at run time: its modules and data files (help.txt); not the .proto
    # sources and .pyi stubs the generated modules came from.
    wanted = {p.relative_to(REPO).as_posix() for p in (REPO / "sriovdra").rglob("*")
              if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".proto", ".pyi")}
    assert "sriovdra/cli/help.txt" in wanted
    shipped = {p.relative_to(unpacked).as_posix() for p in unpacked.rglob("*") if p.is_file()}
    assert wanted - shipped == set()
    (dist_info,) = unpacked.glob("*.dist-info")
    metadata = (dist_info / "METADATA").read_text()
    requires = {canonical(line.removeprefix("Requires-Dist: ")) for line in metadata.splitlines()
                if line.startswith("Requires-Dist: ") and "extra ==" not in line}
    assert requires == {canonical(d) for d in PROJECT["dependencies"]}


def test_entrypoint_is_the_wheels_console_script(dockerfile, unpacked):
    _, _, runtime = dockerfile
    (entrypoint,) = runtime.all("ENTRYPOINT")
    assert exec_form(entrypoint) == ["sriovdra"]
    scripts = wheel_entry_points(unpacked)["console_scripts"]
    assert scripts["sriovdra"] == PROJECT["scripts"]["sriovdra"]
    module, function = scripts["sriovdra"].split(":")
    source = unpacked / (module.replace(".", "/") + "/__init__.py")
    if not source.exists():
        source = unpacked / (module.replace(".", "/") + ".py")
    defined = {n.name for n in ast.parse(source.read_text()).body if isinstance(n, ast.FunctionDef)}
    assert function in defined, f"{source}: no {function}()"


def test_cmd_and_the_images_roles_run_from_the_wheel(dockerfile, unpacked):
    from typer.main import get_command

    from sriovdra.cli.app import app

    _, _, runtime = dockerfile
    (cmd,) = runtime.all("CMD")
    cmd = exec_form(cmd)
    commands = set(get_command(app).commands)
    assert all(w in commands for w in cmd if not w.startswith("-")), f"CMD {cmd}: not a sriovdra command"
    entry = wheel_entry_points(unpacked)["console_scripts"]["sriovdra"]
    proc = run_console_script(unpacked, entry, *cmd)
    assert proc.returncode == 0 and proc.stdout.startswith("Usage: sriovdra"), proc.stderr
    # What the chart runs in the image: the DaemonSet's serve and the webhook Deployment.
    for role in ("serve", "webhook"):
        assert role in commands
        proc = run_console_script(unpacked, entry, role, "--help")
        assert proc.returncode == 0 and f"Usage: sriovdra {role}" in proc.stdout, proc.stderr
    proc = run_console_script(unpacked, entry, "--version")
    assert proc.stdout.strip() == f"sriovdra {runtime.args()['VERSION']}", proc.stdout + proc.stderr


def test_runtime_runs_as_a_non_root_user_it_creates(dockerfile):
    _, _, runtime = dockerfile
    user = runtime.all("USER")[-1]
    uid, _, gid = user.partition(":")
    # Numeric, so that the kubelet can enforce runAsNonRoot without reading the image's /etc/passwd.
    assert uid.isdigit() and int(uid) != 0 and (not gid or gid.isdigit() and int(gid) != 0), user
    useradd = shlex.split(runtime.run_with("useradd"))
    assert useradd[useradd.index("--uid") + 1] == uid
    last = [ins for ins, _ in runtime.steps if ins in ("USER", "RUN")][-1]
    assert last == "USER", "no RUN after USER: the non-root user is the image's last word"
