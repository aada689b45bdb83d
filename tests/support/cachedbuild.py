"""Running a hack/ build or setup script once per cache from a test fixture.

The scripts (hack/apiserver/build.sh, hack/helm/build.sh, hack/runtime/setup.sh) share a protocol:
`--check` exits 0 when the cache is complete, no argument builds. A cold build streams its progress
to the terminal (it can take minutes); a failed build fails the test with the tail of its output,
it never skips. Only a host that cannot build at all (not root, no apt) skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import pytest

BUILD_TOOLS = ("apt-get", "apt-cache", "dpkg", "flock")


def ensure_built(config, script: Path, missing: str, *, check_root: bool = True, env: dict | None = None,
                 timings: dict[str, float] | None = None, labels: tuple[str, str, str] = ("warm", "cold", "failed"),
                 ) -> None:
    """Run `script` unless `script --check` says it need not. `missing` says what is not there
    ("the real-apiserver binaries are not built"), for the skip reasons; `labels` name the warm,
    cold and failed outcomes in `timings` (seconds)."""
    t0 = time.monotonic()
    if subprocess.run([str(script), "--check"], stdin=subprocess.DEVNULL, env=env).returncode == 0:
        if timings is not None:
            timings[labels[0]] = time.monotonic() - t0
        return
    where = f"{script.parent.name}/{script.name}"
    if check_root and os.geteuid() != 0:
        pytest.skip(f"{missing} and building it (hack/{where}: Debian packages through a private apt config) "
                    f"needs root")
    absent = [t for t in BUILD_TOOLS if shutil.which(t) is None]
    if absent:
        pytest.skip(f"{missing} and building it needs {', '.join(absent)}")
    tail: deque[str] = deque(maxlen=40)
    capman = config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():
        sys.stderr.write(f"\n{missing}: running hack/{where} (once per cache)\n")
        proc = subprocess.Popen([str(script)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace", env=env)
        try:
            for line in proc.stdout:
                tail.append(line)
                sys.stderr.write(line)
                sys.stderr.flush()
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if timings is not None:
        timings[labels[1] if rc == 0 else labels[2]] = time.monotonic() - t0
    if rc != 0:
        pytest.fail(f"hack/{where} failed (exit {rc}); its output ends with:\n{''.join(tail)}", pytrace=False)
