#!/usr/bin/env python3
"""Regenerate the protobuf modules under sriovdra/plugin/proto/ (with gRPC stubs) and sriovdra/nri/proto/.

Needs grpcio-tools (the version pinned in pyproject's test extras: the generated code records
it, and tests/plugin/test_protos.py checks that regeneration reproduces the committed files).
    .venv/bin/python hack/gen_protos.py            # write into the source tree
    .venv/bin/python hack/gen_protos.py --out DIR  # write elsewhere (the test does this)
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# proto dir -> whether it gets gRPC stubs (NRI speaks ttrpc, framed by sriovdra.nri.ttrpc, not gRPC)
PROTO_DIRS = {"sriovdra/plugin/proto": True, "sriovdra/nri/proto": False}


def protos() -> list[tuple[str, bool]]:
    """(proto path relative to the repo, with gRPC stubs) for every .proto in PROTO_DIRS."""
    return [(os.path.relpath(p, REPO), grpc_stubs) for proto_dir, grpc_stubs in PROTO_DIRS.items()
            for p in sorted(glob.glob(os.path.join(REPO, proto_dir, "*.proto")))]


def generate(out: str) -> list[str]:
    """Run protoc once per file (one pluginregistration package per run), -I at the repo root so
    that the generated modules import each other as sriovdra.<dir>.proto.*; returns the files."""
    from grpc_tools import protoc  # dev dependency only

    written = []
    for proto, grpc_stubs in protos():
        os.makedirs(os.path.join(out, os.path.dirname(proto)), exist_ok=True)
        args = ["protoc", f"-I{REPO}", f"--python_out={out}", f"--pyi_out={out}"]
        args += [f"--grpc_python_out={out}"] if grpc_stubs else []
        if protoc.main([*args, os.path.join(REPO, proto)]) != 0:
            raise RuntimeError(f"protoc failed for {proto}")
        stem = proto[:-len(".proto")]
        written += [f"{stem}_pb2.py", f"{stem}_pb2.pyi"] + ([f"{stem}_pb2_grpc.py"] if grpc_stubs else [])
    return written


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=REPO)
    args = ap.parse_args()
    for f in generate(os.path.abspath(args.out)):
        print(f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
