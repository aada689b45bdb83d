"""Fake-host descriptions (sriovdra/fakehost.py) from hostile YAML: a FakeHostError that names the
field, never a traceback, and never a file written outside the target root."""

from __future__ import annotations

import copy
import os
import re
import shutil
import tempfile

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sriovdra import fakehost
from tests.hostile.conftest import examples
from tests.hostile.strategies import hostile_names, json_values

BASE = {
    "description": "hostile",
    "host": {"kind": "baremetal", "modules": ["mlx5_ib", "ib_uverbs", "rdma_ucm", "vfio_pci"],
             "rdmaNetnsMode": "exclusive", "containerd": {"configVersion": 3, "cdi": True, "nri": True,
                                                          "nriSocket": False}},
    "pfs": [
        {"pci": "0000:3b:00.0", "netdev": "ens1f0", "numa": 0, "eswitch": "switchdev",
         "vfs": {"total": 4, "count": 2, "netdevPrefix": "ens1f0v", "overrides": {1: {"driver": "vfio-pci"}}}},
        {"pci": "0000:5e:00.0", "link": "infiniband", "netdev": "ib0", "rdmaName": "mlx5_9",
         "ports": [{"state": "Active", "lid": 3, "pkeys": [0xFFFF, "0x8001"]}],
         "vfs": {"total": 2, "count": 1, "guids": "derived", "enableError": {"errno": "ENOMEM", "above": 1}}},
    ],
    "functions": [{"pci": "0000:00:08.0", "driver": "virtio-pci", "netdev": "eth0", "vendor": "1af4",
                   "device": "1041"}],
}
# The message's leading location: 'pfs[0].vfs.count: ...', 'host: unknown field(s) x', '<file>: not valid YAML'
_WHERE = re.compile(r"^(host description|host|pfs\[\d+\]|functions\[\d+\]|vfs\.overrides\[\d+\])[^:]*: ")


def _paths(obj, prefix=()):
    """Every place in the description a value can be replaced: (path tuple, container, key)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield prefix + (i,)
            yield from _paths(v, prefix + (i,))


PATHS = sorted(_paths(BASE), key=str)


def _top(path: tuple) -> str:
    return f"{path[0]}[{path[1]}]" if path[0] in ("pfs", "functions") and len(path) > 1 else str(path[0])


def _tree(root: str) -> set[str]:
    out = set()
    for d, dirs, files in os.walk(root):
        out.update(os.path.join(d, n) for n in dirs + files)
    return out


def _build(spec, sandbox: str) -> tuple[str | None, Exception | None]:
    """Build into sandbox/a/b/c/root (deep, so that an escape of a few '..' stays in the sandbox);
    returns (root or None, error) and asserts nothing outside root changed."""
    root = os.path.join(sandbox, "a", "b", "c", "root")
    os.makedirs(os.path.dirname(root))
    before = _tree(sandbox)
    error = None
    try:
        fakehost.build(spec, root)
    except fakehost.FakeHostError as e:
        error = e
    after = {p for p in _tree(sandbox) if not p.startswith(root + os.sep)} - {root}
    assert after == before, f"written outside the fake root: {sorted(after - before)[:5]}"
    return (None if error else root), error


mutations = st.one_of(json_values, hostile_names, st.sampled_from([
    {"unknownField": 1}, [], {}, None, -1, 2**40, "0000:3b:00.0", "ffff:ff:1f.7", "-1:3b:00.0", 256,
    {"state": "Bogus"}, {"driver": "../../../x"}, {"errno": "EBOGUS"}, "../../../../../../tmp/escape"]))


@settings(max_examples=examples(100))
@given(path=st.sampled_from(PATHS), value=mutations)
def test_one_hostile_value_anywhere(tmp_path, path, value):
    spec = copy.deepcopy(BASE)
    target = spec
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    sandbox = tempfile.mkdtemp(prefix="fh", dir=tmp_path)
    try:
        root, error = _build(spec, sandbox)
        if error is not None:
            message = str(error)
            assert _WHERE.match(message), message[:300]
            assert len(message) < 1000, message[:300]
            assert message.startswith(_top(path)) or message.startswith("host description"), (path, message[:300])
    finally:
        shutil.rmtree(sandbox)


@settings(max_examples=examples(80))
@given(extra=st.dictionaries(hostile_names, json_values, min_size=1, max_size=3),
       where=st.sampled_from([(), ("host",), ("pfs", 0), ("pfs", 0, "vfs"), ("pfs", 1, "ports", 0), ("functions", 0),
                              ("host", "containerd"), ("pfs", 1, "vfs", "enableError")]))
def test_unknown_fields_are_named(tmp_path, extra, where):
    spec = copy.deepcopy(BASE)
    target = spec
    for key in where:
        target = target[key]
    target.update(extra)
    sandbox = tempfile.mkdtemp(prefix="fh", dir=tmp_path)
    try:
        root, error = _build(spec, sandbox)
        assert root is None and "unknown field(s)" in str(error), str(error)[:300]
    finally:
        shutil.rmtree(sandbox)


@settings(max_examples=examples(80))
@given(doc=st.one_of(json_values.map(lambda v: yaml.safe_dump(v, allow_unicode=True)),
                     st.text(max_size=200), st.sampled_from(["a: " + "9" * 5000, "? [a]\n: b", "*x", "{{{", "- -",
                                                              "!!python/object:os.system {}", "a: !!binary zz"])))
def test_arbitrary_yaml_files(tmp_path, doc):
    sandbox = tempfile.mkdtemp(prefix="fh", dir=tmp_path)
    try:
        path = os.path.join(sandbox, "host.yaml")
        with open(path, "w") as f:
            f.write(doc)
        try:
            spec = fakehost.load_spec(path)
        except fakehost.FakeHostError as e:
            assert str(e).startswith(path), str(e)[:300]
            return
        root, error = _build(spec, os.path.join(sandbox, "s"))
        if error is not None:
            assert _WHERE.match(str(error)), str(error)[:300]
    finally:
        shutil.rmtree(sandbox)


def test_the_base_description_builds(tmp_path):
    sandbox = tempfile.mkdtemp(prefix="fh", dir=tmp_path)
    try:
        root, error = _build(copy.deepcopy(BASE), sandbox)
        assert error is None and os.path.isdir(os.path.join(root, "sys/bus/pci/devices/0000:3b:00.2"))
    finally:
        shutil.rmtree(sandbox)

