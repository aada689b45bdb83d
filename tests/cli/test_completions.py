"""Shell completion: the committed scripts match the command tree, and the entry points answer them."""

import os
import shutil
import subprocess
import sys

import pytest

from sriovdra.cli.completions import COMPLETE_VAR, SCRIPT_FILES, write_scripts

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPLETIONS = os.path.join(REPO, "completions")
ENTRY_POINT = os.path.join(os.path.dirname(sys.executable), "sriovdra")
REGENERATE = "regenerate with: .venv/bin/python -m sriovdra.cli.completions completions"


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SRIOVDRA_", "_SRIOVDRA_", "COMP_"))}
    env.update(extra)
    return env


def complete(words, cword, shell="bash", argv=None):
    """The callback as the scripts make it: no arguments, the command line in COMP_WORDS/COMP_CWORD."""
    argv = argv or [sys.executable, "-m", "sriovdra"]
    env = _env(COMP_WORDS=words, COMP_CWORD=str(cword), **{COMPLETE_VAR: f"{shell}_complete"})
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def bash_values(words, cword, **kw):
    return [line.split(",", 1)[1] for line in complete(words, cword, **kw).splitlines() if line.startswith("plain,")]


def test_committed_scripts_are_regenerated(tmp_path):
    written = write_scripts(str(tmp_path))
    assert sorted(os.path.basename(p) for p in written) == sorted(SCRIPT_FILES.values())
    for name in SCRIPT_FILES.values():
        with open(tmp_path / name) as fresh, open(os.path.join(COMPLETIONS, name)) as committed:
            assert committed.read() == fresh.read(), f"completions/{name} is stale; {REGENERATE}"


@pytest.mark.parametrize("shell", sorted(SCRIPT_FILES))
def test_scripts_call_back_with_clicks_protocol(shell):
    with open(os.path.join(COMPLETIONS, SCRIPT_FILES[shell])) as f:
        text = f.read()
    assert f"{COMPLETE_VAR}={shell}_complete" in text


@pytest.mark.parametrize("argv", [None, [ENTRY_POINT]], ids=["python-m", "entry-point"])
def test_subcommand_name(argv):
    if argv and not os.path.exists(ENTRY_POINT):
        pytest.skip(f"{ENTRY_POINT}: the package is not installed in this interpreter's environment")
    assert bash_values("sriovdra pro", 1, argv=argv) == ["provision"]


def test_every_subcommand_and_root_option():
    assert set(bash_values("sriovdra ", 1)) == {"serve", "discover", "provision", "cdi", "checkpoint", "doctor",
                                                "webhook"}
    assert {"--host-root", "--sysfs-root", "--dev-root", "--version", "--help"} <= set(bash_values("sriovdra --", 1))


def test_nested_subcommands():
    assert bash_values("sriovdra cdi ", 2) == ["generate"]
    assert bash_values("sriovdra checkpoint ", 2) == ["show"]


def test_provision_flags():
    flags = bash_values("sriovdra provision --", 2)
    assert {"--pf", "--num-vfs", "--config", "--dry-run", "--force", "--guids", "--output"} <= set(flags)
    assert "--version" not in flags  # a root option, not provision's


@pytest.mark.parametrize("words,cword", [("sriovdra provision -o ", 3), ("sriovdra discover --output ", 3),
                                         ("sriovdra --sysfs-root /x discover -o ", 5)])
def test_output_formats(words, cword):
    assert bash_values(words, cword) == ["table", "json", "yaml"]


def test_choice_after_prefix():
    assert bash_values("sriovdra provision --guids d", 3) == ["derived"]


def test_zsh_answer_carries_help():
    lines = complete("sriovdra disc", 1, shell="zsh").splitlines()
    assert lines[:2] == ["plain", "discover"] and lines[2] not in ("", "_")


def test_fish_answer():
    # fish passes the whole line in COMP_WORDS and the incomplete token in COMP_CWORD.
    # Each line is type,value<TAB>help; fish shows the help as the description.
    lines = complete("sriovdra pro", "pro", shell="fish").splitlines()
    assert [line.split("\t")[0] for line in lines] == ["plain,provision"]
    assert lines[0].split("\t")[1].startswith("Set the number of VFs")


@pytest.mark.parametrize("shell", sorted(SCRIPT_FILES))
def test_source_instruction_prints_the_committed_script(shell):
    proc = subprocess.run([sys.executable, "-m", "sriovdra"], capture_output=True, text=True,
                          env=_env(**{COMPLETE_VAR: f"{shell}_source"}))
    assert proc.returncode == 0, proc.stderr
    with open(os.path.join(COMPLETIONS, SCRIPT_FILES[shell])) as f:
        assert proc.stdout == f.read()


@pytest.mark.parametrize("instruction,message", [("bogus", "want <shell>_complete or <shell>_source"),
                                                 ("tcsh_complete", "shell 'tcsh': not supported")])
def test_bad_instruction_is_a_user_error(instruction, message):
    proc = subprocess.run([sys.executable, "-m", "sriovdra"], capture_output=True, text=True,
                          env=_env(**{COMPLETE_VAR: instruction}))
    assert proc.returncode == 2 and proc.stdout == ""
    assert message in proc.stderr and proc.stderr.startswith("error: ")


def test_callback_imports_nothing_heavy():
    code = ("import sys\nfrom sriovdra.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            "heavy = ('kubernetes', 'grpc', 'pyroute2', 'yaml', 'google')\n"
            "sys.stderr.write(repr(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n")
    env = _env(COMP_WORDS="sriovdra provision --", COMP_CWORD="2", **{COMPLETE_VAR: "bash_complete"})
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert "--num-vfs" in proc.stdout
    assert proc.stderr == "[]"


BASH = shutil.which("bash")


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
@pytest.mark.parametrize("words,cword,expected", [
    ("sriovdra pro", 1, ["provision"]),
    ("sriovdra provision -o ", 3, ["table", "json", "yaml"]),
    ("sriovdra checkpoint s", 2, ["show"]),
])
def test_bash_script_fills_compreply(words, cword, expected):
    """Source the committed script in a real bash and call its function as readline would."""
    if not os.path.exists(ENTRY_POINT):
        pytest.skip(f"{ENTRY_POINT}: the package is not installed in this interpreter's environment")
    script = os.path.join(COMPLETIONS, SCRIPT_FILES["bash"])
    program = (f'source "{script}"\n'
               'complete -p sriovdra >&2\n'
               'read -ra COMP_WORDS <<< "$WORDS"\n'
               '[[ "$WORDS" == *" " ]] && COMP_WORDS+=("")\n'
               'COMP_CWORD=$CWORD\n'
               '_sriovdra_completion sriovdra\n'
               'printf "%s\\n" "${COMPREPLY[@]}"\n')
    env = _env(PATH=os.path.dirname(ENTRY_POINT) + os.pathsep + os.environ.get("PATH", ""), WORDS=words,
               CWORD=str(cword))
    proc = subprocess.run([BASH, "--norc", "--noprofile", "-c", program], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "-F _sriovdra_completion sriovdra" in proc.stderr  # the script registered itself
    assert proc.stdout.splitlines() == expected


@pytest.mark.parametrize("words, kind", [("sriovdra provision --config ", "file"), ("sriovdra --host-root ", "dir"),
                                         ("sriovdra webhook --tls-cert-file ", "file"),
                                         ("sriovdra serve --state-dir ", "dir")])
def test_path_options_complete_file_names(words, kind):
    """click's path type: the shell script is told to complete file (or directory) names there."""
    lines = complete(words, len(words.split()))
    assert lines.splitlines() == [f"{kind},"], lines
