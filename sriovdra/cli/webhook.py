"""`sriovdra webhook`: the admission webhook validating our opaque configs (run by a Deployment)."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Annotated

import typer

from sriovdra.cli.options import FILE

from sriovdra.cli.logs import LogFormat, LogFormatOption, LogLevel, LogLevelOption, setup_logging
from sriovdra.cli.output import die

# Unprivileged: the webhook runs as a non-root container, its Service maps 443 to this port.
DEFAULT_PORT = 8443


def webhook_command(
    tls_cert_file: Annotated[str, typer.Option(
        "--tls-cert-file", envvar="SRIOVDRA_TLS_CERT_FILE", metavar="PATH", click_type=FILE,
        help="PEM serving certificate (chain); re-read when it changes.")],
    tls_private_key_file: Annotated[str, typer.Option(
        "--tls-private-key-file", envvar="SRIOVDRA_TLS_PRIVATE_KEY_FILE", metavar="PATH", click_type=FILE,
        help="Its unencrypted PEM private key; re-read when it changes.")],
    port: Annotated[int, typer.Option(
        envvar="SRIOVDRA_WEBHOOK_PORT", min=0, max=65535,
        help="HTTPS port (unprivileged by default; 0 picks a free one, logged).")] = DEFAULT_PORT,
    bind_address: Annotated[str, typer.Option(
        envvar="SRIOVDRA_WEBHOOK_BIND_ADDRESS", help="Address to listen on (:: for IPv6).")] = "0.0.0.0",
    log_level: LogLevelOption = LogLevel.info,
    log_format: LogFormatOption = LogFormat.text,
) -> None:
    """Serve the admission webhook validating claims' opaque configs."""
    setup_logging(log_level, log_format)
    from sriovdra.webhook import CertificateError, ServingCertificate, WebhookOptions, WebhookServer

    opts = WebhookOptions(cert_file=tls_cert_file, key_file=tls_private_key_file, bind_address=bind_address,
                          port=port)
    try:
        certs = ServingCertificate(opts.cert_file, opts.key_file)
    except CertificateError as e:
        die(f"--tls-cert-file/--tls-private-key-file: {e}")
    try:
        server = WebhookServer(opts, certs)
    except OSError as e:
        die(f"cannot listen on {bind_address}:{port}: {e.strerror or e}")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    host = f"[{bind_address}]" if ":" in bind_address else bind_address
    logging.getLogger("sriovdra").info("webhook listening on https://%s:%d", host, server.port)
    stop.wait()
    logging.getLogger("sriovdra").info("stopping the webhook")
    server.stop()
