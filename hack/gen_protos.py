#!/usr/bin/env python3
"""Regenerate the gRPC stubs under sriovdra/plugin/proto/ from the .proto files there.

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
PROTO_DIR = "sriovdra/plugin/proto"


def protos() -> list[str]:
    return sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, PROTO_DIR, "*.proto")))


def generate(out: str) -> list[str]:
    """Run protoc once per file (one pluginregistration package per run), -I at the repo root so
    that the generated modules import each other as sriovdra.plugin.proto.*; returns the files."""
    from grpc_tools import protoc  # dev dependency only

    os.makedirs(os.path.join(out, PROTO_DIR), exist_ok=True)
    written = []
    for proto in protos():
        args = ["protoc", f"-I{REPO}", f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}",
                os.path.join(REPO, proto)]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed for {proto}")
        stem = proto[:-len(".proto")]
        written += [f"{stem}_pb2.py", f"{stem}_pb2.pyi", f"{stem}_pb2_grpc.py"]
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
