"""Hostile sysfs contents on a fake host, property-based (the spirit of tests/unit/test_hostile_sysfs.py,
over every file of the tree): garbage bytes, NUL, huge files, missing files, dangling symlinks,
symlink loops, a directory or a FIFO where a file was. Discovery never raises, never blocks, keeps
every device of the other functions exactly as it was, and when the function's own devices change
because a file became unreadable, a problem names that file."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sriovdra import fakehost, model
from sriovdra.host.discovery import BDF, discover
from sriovdra.host.paths import HostPaths
from tests.conftest import eth_pf, ib_pf
from tests.hostile.conftest import examples

SPEC = {"host": {"modules": ["mlx5_ib", "ib_uverbs", "rdma_ucm", "vfio_pci"]},
        "pfs": [eth_pf(eswitch="switchdev"), ib_pf()]}
BDF_PART = re.compile(BDF.pattern.strip("^$"))
UNREADABLE = ("nul", "directory", "loop", "fifo")  # a read fails (or is refused): the file must be named


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile-sysfs")
    host = fakehost.build(SPEC, str(base / "host"))
    entries = []  # (path relative to the root, function address, path relative to the function dir)
    devices = os.path.join(host.sysfs, "devices")
    for d, dirs, files in os.walk(devices):
        for n in files + [x for x in dirs if os.path.islink(os.path.join(d, x))]:
            rel = os.path.relpath(os.path.join(d, n), host.root)
            parts = rel.split(os.sep)
            at = max((i for i, p in enumerate(parts) if BDF_PART.fullmatch(p)), default=None)
            if at is not None and at < len(parts) - 1:
                entries.append((rel, parts[at], "/".join(parts[at + 1:])))
    inv = discover(HostPaths.resolve(host.root))
    return host.root, sorted(entries), _by_function(inv), base


def _by_function(inv) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for d in inv.dra_devices():
        out.setdefault(d.pci_address, []).append(d.to_dict())
    return out


def _mutate(path: str, how: str, data: bytes) -> None:
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)
    if how == "missing":
        return
    if how == "dangling":
        os.symlink("../nowhere/at/all", path)
    elif how == "loop":
        os.symlink(os.path.basename(path), path)
    elif how == "directory":
        os.mkdir(path)
    elif how == "fifo":
        os.mkfifo(path)
    else:
        with open(path, "wb") as f:
            f.write({"garbage": data, "nul": data + b"\x00" + data, "huge": b"9" * (1 << 20)}[how])


@settings(max_examples=examples(120))
@given(data=st.data(), how=st.sampled_from(["garbage", "nul", "huge", "missing", "dangling", "loop", "directory",
                                            "fifo"]),
       garbage=st.binary(max_size=64))
def test_one_hostile_file_degrades_only_its_function(pristine, tmp_path, data, how, garbage):
    src, entries, before, _ = pristine
    rel, address, inner = data.draw(st.sampled_from(entries), label="file")
    root = str(tmp_path / f"h{os.getpid()}")
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(src, root, symlinks=True)
    try:
        _mutate(os.path.join(root, rel), how, garbage)
        paths = HostPaths.resolve(root)
        inv = discover(paths)
        json.dumps(inv.to_dict())
        for dev in inv.dra_devices():
            assert model.limit_problems(dev) == [], dev.name
        after = _by_function(inv)
        pf_of = {fn.address: fn.pf_address for fn in inv.functions}
        # The function itself and, for a PF, its VFs (their PF facts come from it) may change; nothing else.
        touched = {address} | {vf for vf, pf in pf_of.items() if pf == address}
        for fn_address, devs in before.items():
            if fn_address not in touched:
                assert after.get(fn_address) == devs, f"{rel} ({how}) changed the devices of {fn_address}"
        if how in UNREADABLE and after.get(address) != before.get(address):
            named = f"{paths.sysfs}/bus/pci/devices/{address}/{inner}"
            problems = [p.path for p in inv.problems]
            assert any(p == named or p.startswith(named + "/") for p in problems), (rel, how, problems)
    finally:
        shutil.rmtree(root, ignore_errors=True)
