"""`sriovdra webhook` as the API server sees it: a subprocess, HTTPS on 127.0.0.1, AdmissionReviews."""

import json
import os
import signal
import socket
import ssl
import warnings

import pytest

from tests.webhook.conftest import client_context, run_webhook
from tests.webhook.reviews import (
    KINDS,
    VERSIONS,
    VF_CLASS,
    body,
    claim_object,
    device_class_object,
    ib,
    opaque,
    seed,
    vf,
)


def _response(hook, obj, **kw) -> dict:
    status, headers, data = hook.post(body(obj, **kw))
    assert status == 200 and headers["Content-Type"] == "application/json", data
    answer = json.loads(data)
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    return answer["response"]


# The reference driver's e2e: the ib-test2 IbConfig is accepted, pkey 0 and bad MTUs refused.
@pytest.mark.parametrize("config, expect", [
    (ib(pkey=32769, mtu=4096, trafficClass=128), None),
    (ib(pkey=0), "pkey must be in range"),
    (ib(mtu=0), "invalid IB MTU value"),
    (ib(mtu=128), "invalid IB MTU value"),
    (ib(mtu=3000), "invalid IB MTU value"),
    (ib(mtu=9000), "invalid IB MTU value"),
    (ib(partition=1), "IbConfig: unknown field(s) partition"),
    (opaque("ib.sigs.k8s.io", {"apiVersion": "ib.resource.sigs.k8s.io/v1alpha1", "kind": "PkeyConfig"}),
     "kind 'PkeyConfig'"),
])
def test_reference_e2e_cases(webhook, config, expect):
    answer = _response(webhook, claim_object("ResourceClaim", "v1", [config]), uid="e2e-uid")
    assert answer["uid"] == "e2e-uid"
    if expect is None:
        assert answer == {"uid": "e2e-uid", "allowed": True}
    else:
        assert answer["allowed"] is False and answer["status"]["reason"] == "Invalid"
        assert answer["status"]["message"].startswith("1 configs failed to validate: object at "
                                                      "spec.devices.config[0].opaque.parameters is invalid: ")
        assert expect in answer["status"]["message"]


def test_every_version_and_kind_on_one_keep_alive_connection(webhook):
    conn = webhook.connect()
    try:
        for kind in KINDS:
            for version in VERSIONS:
                path = "spec.devices" if kind == "ResourceClaim" else "spec.spec.devices"
                ok = json.loads(webhook.post(body(claim_object(kind, version, [ib()])), conn=conn)[2])
                assert ok["response"]["allowed"] is True, (kind, version)
                bad = json.loads(webhook.post(body(claim_object(kind, version, [vf(ifName="eth0")],
                                                                device_class=VF_CLASS)), conn=conn)[2])
                assert bad["response"]["status"]["message"] == (
                    f"1 configs failed to validate: object at {path}.config[0].opaque.parameters is invalid: "
                    "sriovnetwork.openshift.io: VfConfig.ifName: 'eth0' is the pod's primary interface (set up by "
                    "its CNI); pick another name, e.g. net1"), (kind, version)
    finally:
        conn.close()
    # the log reaches us through a reader thread: wait for the last line before judging the whole log
    webhook.wait_log("denied CREATE resource.k8s.io/v1beta2 ResourceClaimTemplate default/c1: 1 configs failed to "
                     "validate")
    assert webhook.log.count("TLS handshake") == 0


def test_seed_manifests_accepted_and_other_drivers_ignored(webhook):
    assert _response(webhook, seed("sriov-vf-template.yaml"))["allowed"] is True
    assert _response(webhook, claim_object("ResourceClaim", "v1", seed("ib-config.yaml")["config"]))["allowed"]
    other = claim_object("ResourceClaim", "v1beta1", [opaque("gpu.example.com", {"pkey": 0}), ib()])
    assert _response(webhook, other)["allowed"] is True


def test_device_classes_configs_are_validated(webhook):
    assert _response(webhook, device_class_object("v1", [ib()]))["allowed"] is True
    denied = _response(webhook, device_class_object("v1beta2", [ib(pkey=0)]))
    assert denied["status"]["message"].startswith("1 configs failed to validate: object at spec.config[0].opaque."
                                                  "parameters is invalid: ib.sigs.k8s.io: IbConfig.pkey: pkey must "
                                                  "be in range")


def test_several_failing_configs_are_counted(webhook):
    obj = claim_object("ResourceClaim", "v1", [ib(pkey=0), vf(vlan=5000), ib(), ib(mtu=9000)])
    message = _response(webhook, obj)["status"]["message"]
    assert message.startswith("3 configs failed to validate: ")
    assert [line.split(" is invalid")[0] for line in message.split("\n")] == [
        "3 configs failed to validate: object at spec.devices.config[0].opaque.parameters",
        "object at spec.devices.config[1].opaque.parameters", "object at spec.devices.config[3].opaque.parameters"]


def test_delete_and_foreign_kinds_are_allowed(webhook):
    bad = claim_object("ResourceClaim", "v1", [ib(pkey=0)])
    assert _response(webhook, None, old=bad, operation="DELETE")["allowed"] is True
    assert _response(webhook, bad, kind="Pod", group="")["allowed"] is True


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/yaml", "application/x-www-form-urlencoded"])
def test_content_type_must_be_json(webhook, content_type):
    conn = webhook.connect()
    try:
        status, _, data = webhook.post(body(claim_object("ResourceClaim", "v1", [ib()])), content_type=content_type,
                                       conn=conn)
        assert status == 415 and b"Content-Type must be application/json, got " in data
        assert webhook.post(body(claim_object("ResourceClaim", "v1", [ib()])), conn=conn)[0] == 200  # kept alive
    finally:
        conn.close()


def test_json_with_charset_is_json(webhook):
    status, _, data = webhook.post(body(claim_object("ResourceClaim", "v1", [ib()])),
                                   content_type="application/json; charset=utf-8")
    assert status == 200 and json.loads(data)["response"]["allowed"] is True


@pytest.mark.parametrize("payload, message", [
    (b"{", b"malformed AdmissionReview: body is not JSON"),
    (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}',
     b"malformed AdmissionReview: request: expected an object"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                 "request": {"kind": {"group": "resource.k8s.io", "version": "v1", "kind": "ResourceClaim"}}}).encode(),
     b"malformed AdmissionReview: request.uid: expected a non-empty string"),
])
def test_malformed_review_is_400_and_the_server_keeps_serving(webhook, payload, message):
    conn = webhook.connect()
    try:
        status, _, data = webhook.post(payload, conn=conn)
        assert status == 400 and data.startswith(message), data
        # same connection, next request: the body was consumed, keep-alive still works
        status, _, data = webhook.post(body(claim_object("ResourceClaim", "v1", [ib()])), conn=conn)
        assert status == 200
    finally:
        conn.close()
    webhook.wait_log("malformed AdmissionReview from 127.0.0.1")


def test_health_paths_and_wrong_paths_and_methods(webhook):
    for path in ("/readyz", "/healthz", "/readyz?verbose"):
        status, _, data = webhook.request("GET", path)
        assert (status, data) == (200, b"ok\n")
    assert webhook.request("GET", "/nope")[0] == 404
    status, headers, _ = webhook.request("GET", "/validate")
    assert status == 405 and headers["Allow"] == "POST"
    assert webhook.post(b"{}", path="/readyz")[0] == 405
    assert webhook.post(b"{}", path="/mutate")[0] == 404
    # The API server appends ?timeout=10s to the configured path.
    status, _, data = webhook.post(body(claim_object("ResourceClaim", "v1", [ib()])), path="/validate?timeout=10s")
    assert status == 200 and json.loads(data)["response"]["allowed"] is True


def test_body_limit_and_content_length(webhook):
    status, headers, data = webhook.post(b"x" * ((4 << 20) + 1))
    assert status == 413 and b"above the limit of 4194304" in data and headers["Connection"] == "close"
    # No Content-Length: refused before reading anything.
    sock = _raw_tls(webhook)
    try:
        sock.sendall(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 411 ")
    finally:
        sock.close()


def _raw_tls(hook, cafile=None) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", hook.port), timeout=30)
    return client_context(cafile or hook.cafile).wrap_socket(raw, server_hostname="127.0.0.1")


def test_tls_below_1_2_is_refused(webhook):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(webhook.cafile)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # that is the point
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client even try TLS 1.1
    raw = socket.create_connection(("127.0.0.1", webhook.port), timeout=30)
    with pytest.raises(ssl.SSLError):
        ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    raw.close()
    assert webhook.request("GET", "/readyz")[0] == 200


def test_silent_clients_do_not_block_others(webhook):
    """Connections that never send a ClientHello hold their own thread, not the accept loop."""
    silent = [socket.create_connection(("127.0.0.1", webhook.port), timeout=30) for _ in range(5)]
    try:
        half = _raw_tls(webhook)
        half.sendall(b"POST /validate HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        status, _, data = webhook.post(body(claim_object("ResourceClaim", "v1", [ib(pkey=0)])))
        assert status == 200 and json.loads(data)["response"]["allowed"] is False
        half.close()
    finally:
        for s in silent:
            s.close()


def test_sigterm_with_an_idle_keep_alive_connection_exits_0(webhook):
    conn = webhook.connect()
    assert webhook.request("GET", "/readyz", conn=conn)[0] == 200  # the connection stays open, idle
    assert webhook.stop(signal.SIGTERM) == 0
    webhook.wait_log("stopping the webhook")
    assert "still busy" not in webhook.log
    conn.close()


# -- certificates -------------------------------------------------------------------------


def _replace(path: str, source: str) -> None:
    """Atomically, as most tools and cert-manager's Secret updates do (new inode)."""
    with open(source, "rb") as f:
        data = f.read()
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _overwrite(path: str, source: str | bytes) -> None:
    """In place: same inode, as `cp new.crt tls.crt` does."""
    data = source if isinstance(source, bytes) else open(source, "rb").read()
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(data)


def _handshake_ok(hook, cafile: str) -> bool:
    try:
        _raw_tls(hook, cafile).close()
        return True
    except ssl.SSLCertVerificationError:
        return False


def test_rotated_certificate_is_served_to_new_connections(webhook, live_pair, pki):
    old_conn = webhook.connect(pki.ca.cert)
    assert webhook.request("GET", "/readyz", conn=old_conn)[0] == 200
    assert not _handshake_ok(webhook, pki.other_ca.cert)
    _replace(live_pair.key, pki.other_server.key)
    _replace(live_pair.cert, pki.other_server.cert)
    assert _handshake_ok(webhook, pki.other_ca.cert)  # a client trusting only the new CA
    assert not _handshake_ok(webhook, pki.ca.cert)
    status, _, data = webhook.post(body(claim_object("ResourceClaim", "v1", [ib()])),
                                   conn=webhook.connect(pki.other_ca.cert))
    assert status == 200 and json.loads(data)["response"]["allowed"] is True
    # An established connection keeps its session.
    assert webhook.request("GET", "/readyz", conn=old_conn)[0] == 200
    old_conn.close()
    webhook.wait_log(f"serving the new certificate from {live_pair.cert}")


def test_half_rotated_pair_keeps_the_old_certificate_until_both_files_match(webhook, live_pair, pki):
    _overwrite(live_pair.key, pki.other_server.key)  # the key first: it does not match the old cert
    assert _handshake_ok(webhook, pki.ca.cert)  # old pair still served
    webhook.wait_log("not using the changed certificate files")
    _overwrite(live_pair.cert, pki.other_server.cert)
    assert _handshake_ok(webhook, pki.other_ca.cert)
    assert not _handshake_ok(webhook, pki.ca.cert)


@pytest.mark.parametrize("garbage", [b"", b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"])
def test_broken_replacement_keeps_the_old_certificate(webhook, live_pair, pki, garbage):
    _overwrite(live_pair.cert, garbage)
    for _ in range(3):  # logged once, not per connection
        assert _handshake_ok(webhook, pki.ca.cert)
    assert webhook.request("GET", "/readyz")[0] == 200
    webhook.wait_log("not using the changed certificate files")
    assert webhook.log.count("not using the changed certificate files") == 1
    _overwrite(live_pair.cert, pki.server.cert)  # repaired: the same pair as before, nothing to reload
    os.unlink(live_pair.key)  # mid-rotation gap: a file briefly missing
    assert _handshake_ok(webhook, pki.ca.cert)
    webhook.wait_log(f"{live_pair.key}: No such file or directory; still serving the previous certificate")
    _replace(live_pair.key, pki.other_server.key)
    _replace(live_pair.cert, pki.other_server.cert)
    assert _handshake_ok(webhook, pki.other_ca.cert)


def test_secret_volume_symlink_swap(start_webhook, tmp_path, pki):
    """A Kubernetes Secret volume: tls.crt -> ..data/tls.crt, ..data -> ..<timestamp>/, swapped atomically."""
    vol = tmp_path / "secret"
    for name, pair in (("..v1", pki.server), ("..v2", pki.other_server)):
        (vol / name).mkdir(parents=True)
        (vol / name / "tls.crt").write_bytes(open(pair.cert, "rb").read())
        (vol / name / "tls.key").write_bytes(open(pair.key, "rb").read())
    os.symlink("..v1", vol / "..data")
    for f in ("tls.crt", "tls.key"):
        os.symlink(f"..data/{f}", vol / f)
    hook = start_webhook(str(vol / "tls.crt"), str(vol / "tls.key"), pki.ca.cert)
    assert _handshake_ok(hook, pki.ca.cert)
    os.symlink("..v2", vol / "..data_tmp")
    os.replace(vol / "..data_tmp", vol / "..data")
    assert _handshake_ok(hook, pki.other_ca.cert)


@pytest.mark.parametrize("setup, message", [
    (lambda d, p: (str(d / "missing.crt"), p.server.key), "missing.crt: No such file or directory"),
    (lambda d, p: (p.server.cert, str(d / "missing.key")), "missing.key: No such file or directory"),
    (lambda d, p: (p.server.cert, p.other_server.key), "KEY_VALUES_MISMATCH"),
    (lambda d, p: (p.server.key, p.server.key), "expected a PEM certificate chain"),
])
def test_unusable_certificate_at_start_exits_2(tmp_path, pki, setup, message):
    cert, key = setup(tmp_path, pki)
    proc = run_webhook("--tls-cert-file", cert, "--tls-private-key-file", key, "--port", "0")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: --tls-cert-file/--tls-private-key-file: ") and message in proc.stderr


def test_unreadable_certificate_exits_2(tmp_path, pki):
    proc = run_webhook("--tls-cert-file", str(tmp_path), "--tls-private-key-file", pki.server.key)
    # refused by the option's path type, naming the flag and the path
    assert proc.returncode == 2 and "--tls-cert-file" in proc.stderr and f"'{tmp_path}' is a directory" in proc.stderr


def test_port_in_use_exits_2(webhook, pki):
    proc = run_webhook("--tls-cert-file", pki.server.cert, "--tls-private-key-file", pki.server.key,
                       "--bind-address", "127.0.0.1", "--port", str(webhook.port))
    assert proc.returncode == 2 and f"cannot listen on 127.0.0.1:{webhook.port}: Address already in use" in proc.stderr


def test_missing_flags_exit_2():
    proc = run_webhook()
    assert proc.returncode == 2 and "--tls-cert-file" in proc.stderr
