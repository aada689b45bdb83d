"""The API client and the raw-JSON calls the adapters share.

The adapters work on plain JSON dicts (`_preload_content=False`): the pydantic models of the
kubernetes 37 client are strict and change shape between client generations, while the wire
JSON is the API's own contract.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

FIELD_MANAGER = "sriovdra"
REQUEST_TIMEOUT = 15.0


class ApiError(Exception):
    """A failed API call; status is the HTTP status (0 when the server could not be reached)."""

    def __init__(self, message: str, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status, self.reason = status, reason

    @property
    def permanent(self) -> bool:
        """Retrying the same request cannot help (gone, forbidden, invalid)."""
        return self.status in (400, 403, 404, 410, 422)


def new_api_client(kubeconfig: str | None):
    """From a kubeconfig file, else the in-cluster service account."""
    from kubernetes import client, config

    if kubeconfig:
        if not os.path.isfile(kubeconfig):
            raise ApiError(f"--kubeconfig {kubeconfig}: no such file")
        return config.new_client_from_config(config_file=kubeconfig)
    cfg = client.Configuration()
    config.load_incluster_config(client_configuration=cfg)
    return client.ApiClient(cfg)


def call(fn: Callable[..., Any], *args, **kwargs) -> dict:
    """Call a generated API method for its raw JSON; errors become ApiError with the server's message."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
    try:
        resp = fn(*args, _preload_content=False, **kwargs)
        return json.loads(resp.data or b"{}")
    except ApiException as e:
        raise _api_error(e) from None
    except (HTTPError, OSError, ValueError) as e:
        raise ApiError(f"API server unreachable or answered garbage: {e}") from None


def _api_error(e) -> ApiError:
    message, reason = e.reason or "", ""
    try:
        status = json.loads(e.body or b"{}")
        message, reason = status.get("message", message), status.get("reason", "")
    except (ValueError, AttributeError):
        pass
    return ApiError(f"HTTP {e.status} {reason}: {message}".replace(" :", ":"), e.status or 0, reason)


def get_path(api_client, path: str) -> dict:
    """GET an arbitrary API path (e.g. /api/v1/nodes/x) without loading its API class."""
    from urllib3.exceptions import HTTPError

    params = api_client.param_serialize(method="GET", resource_path=path, header_params={"Accept": "application/json"},
                                        auth_settings=["BearerToken"])
    try:
        resp = api_client.call_api(*params, _request_timeout=REQUEST_TIMEOUT)
        resp.read()
    except (HTTPError, OSError) as e:
        raise ApiError(f"GET {path}: API server unreachable: {e}") from None
    try:
        body = json.loads(resp.data) if resp.data else {}
    except ValueError:
        body = {}  # an error page that is not JSON
    if not isinstance(body, dict):
        body = {}
    if not 200 <= resp.status <= 299:
        raise ApiError(f"GET {path}: HTTP {resp.status} {body.get('reason', '')}: {body.get('message', '')}",
                       resp.status, body.get("reason", ""))
    return body


def watch_events(fn: Callable[..., Any], timeout_seconds: int, on_open: Callable[[Any], None] | None = None,
                 **kwargs) -> Iterator[dict]:
    """Stream watch events ({"type", "object"}) of a list call until the server ends the watch.
    on_open receives the open response, so that another thread can close it to end the watch."""
    from kubernetes.client.exceptions import ApiException

    try:
        resp = fn(watch=True, timeout_seconds=timeout_seconds, _preload_content=False,
                  _request_timeout=timeout_seconds + REQUEST_TIMEOUT, **kwargs)
    except ApiException as e:
        raise _api_error(e) from None
    if on_open is not None:
        on_open(resp)
    buffer = b""
    try:
        for chunk in resp.stream(65536, decode_content=True):
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    yield json.loads(line)
    finally:
        resp.release_conn()
