"""Test PKI made with the openssl CLI (python `cryptography` is not a dependency): a CA and
server certificates for 127.0.0.1, EC P-256 so that each takes milliseconds."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

OPENSSL = shutil.which("openssl")


@dataclass(frozen=True)
class Pair:
    cert: str
    key: str


def _openssl(*args: str) -> None:
    proc = subprocess.run([OPENSSL or "openssl", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {proc.stderr.strip()}")


def make_ca(directory: str, name: str) -> Pair:
    os.makedirs(directory, exist_ok=True)
    pair = Pair(os.path.join(directory, f"{name}.crt"), os.path.join(directory, f"{name}.key"))
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", pair.key, "-out", pair.cert, "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return pair


def make_server(ca: Pair, directory: str, name: str, san: str = "IP:127.0.0.1,DNS:localhost") -> Pair:
    """A server certificate signed by `ca`, valid for `san` (what Go's verifier, like Python's, checks)."""
    os.makedirs(directory, exist_ok=True)
    pair = Pair(os.path.join(directory, f"{name}.crt"), os.path.join(directory, f"{name}.key"))
    csr, ext = os.path.join(directory, f"{name}.csr"), os.path.join(directory, f"{name}.ext")
    with open(ext, "w") as f:
        f.write(f"subjectAltName={san}\nextendedKeyUsage=serverAuth\nbasicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\nauthorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n")
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", pair.key, "-out", csr, "-subj", f"/CN={name}")
    _openssl("x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-CAcreateserial", "-days", "2",
             "-out", pair.cert, "-extfile", ext)
    return pair
