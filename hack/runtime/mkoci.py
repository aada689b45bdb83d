#!/usr/bin/env python3
"""Build an OCI image-layout tar from a static busybox binary, offline (no registry, no tools).

    mkoci.py BUSYBOX OUT.tar REF [CMD-JSON]

The image has one uncompressed layer: /bin/busybox, symlinks for the applets the runtime tests
use, a minimal /etc/passwd and /etc/group, and the usual empty top-level dirs. `ctr images import`
takes the tar as is; the image name comes from the index's io.containerd.image.name annotation.
The runtime tier builds two images with it (hack/runtime/setup.sh):

* docker.io/library/bbox:1 -- the test containers (CMD /bin/sh);
* registry.k8s.io/pause:3.10 -- the CRI sandbox image, busybox running `sleep 2147483647`. The
  name is containerd's default pinned sandbox image, so no config points at it.

The output is reproducible for a given busybox (all mtimes 0, sorted JSON), so re-running setup
does not change the image digests.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile

APPLETS = ("sh", "sleep", "ls", "cat", "env", "ip", "ifconfig", "mount", "echo", "ps", "id", "hostname",
           "readlink", "stat", "true", "false", "test", "grep", "wc", "head", "tail", "sort", "printf", "uname",
           "ln", "mkdir", "rm", "touch", "date", "kill", "nslookup", "ping", "route")
DIRS = ("bin", "dev", "etc", "proc", "sys", "tmp", "var", "run", "root")
FILES = {"etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n", "etc/group": b"root:x:0:\n",
         "etc/hostname": b"bbox\n"}
CREATED = "2024-01-01T00:00:00Z"

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"


def _entry(name: str, *, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, size: int = 0,
           link: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.size, ti.linkname, ti.mtime = kind, mode, size, link, 0
    return ti


def layer_tar(busybox: bytes) -> bytes:
    """The rootfs layer: busybox + applet symlinks + /etc files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for d in DIRS:
            t.addfile(_entry(d, kind=tarfile.DIRTYPE, mode=0o1777 if d == "tmp" else 0o755))
        t.addfile(_entry("bin/busybox", mode=0o755, size=len(busybox)), io.BytesIO(busybox))
        for applet in APPLETS:
            t.addfile(_entry(f"bin/{applet}", kind=tarfile.SYMTYPE, mode=0o777, link="busybox"))
        for name, content in sorted(FILES.items()):
            t.addfile(_entry(name, size=len(content)), io.BytesIO(content))
    return buf.getvalue()


def _blob(obj) -> tuple[bytes, str]:
    data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


def image_tar(busybox: bytes, ref: str, cmd: list[str]) -> tuple[bytes, str]:
    """The OCI layout tar (oci-layout, index.json, blobs/sha256/*) and the manifest digest."""
    layer = layer_tar(busybox)
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    config, config_digest = _blob({
        "created": CREATED, "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": cmd, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},  # uncompressed: diff id = digest
        "history": [{"created": CREATED, "created_by": "hack/runtime/mkoci.py"}],
    })
    manifest, manifest_digest = _blob({
        "schemaVersion": 2, "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": MT_LAYER, "digest": layer_digest, "size": len(layer)}],
    })
    index, _ = _blob({
        "schemaVersion": 2, "mediaType": MT_INDEX,
        "manifests": [{"mediaType": MT_MANIFEST, "digest": manifest_digest, "size": len(manifest),
                       "platform": {"architecture": "amd64", "os": "linux"},
                       "annotations": {"io.containerd.image.name": ref,
                                       "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1]}}],
    })
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        files = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)]
        files += [(f"blobs/sha256/{d.split(':')[1]}", b) for d, b in
                  ((layer_digest, layer), (config_digest, config), (manifest_digest, manifest))]
        for d in ("blobs", "blobs/sha256"):
            t.addfile(_entry(d, kind=tarfile.DIRTYPE, mode=0o755))
        for name, data in files:
            t.addfile(_entry(name, size=len(data)), io.BytesIO(data))
    return buf.getvalue(), manifest_digest


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    busybox_path, out, ref = argv[:3]
    cmd = json.loads(argv[3]) if len(argv) == 4 else ["/bin/sh"]
    if ":" not in ref.rsplit("/", 1)[-1]:
        print(f"mkoci.py: {ref}: the reference needs a tag", file=sys.stderr)
        return 2
    with open(busybox_path, "rb") as f:
        busybox = f.read()
    data, digest = image_tar(busybox, ref, cmd)
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, out)
    print(f"{ref} {digest} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
