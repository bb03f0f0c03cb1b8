"""Talking to the Kubernetes API: connecting, calls that return the server's JSON, errors.

The `kubernetes` client is synchronous: callers on the event loop run these in a worker
thread. Each module that makes calls declares the RBAC rules it needs (`ApiPermission`),
which deploy/kubernetes/role.yaml grants exactly.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

Json = dict[str, Any]

# (connect, read) seconds for one API call; watches read for longer (see kube_watch).
REQUEST_TIMEOUT = (5.0, 30.0)
MERGE_PATCH = "application/merge-patch+json"
# Retries of a read-modify-write that lost an optimistic-concurrency race.
CONFLICT_RETRIES = 5


@dataclass(frozen=True)
class ApiPermission:
    """One RBAC rule a module needs: deploy/kubernetes/role.yaml grants exactly these."""

    group: str  # "" for the core API group
    resource: str  # "deployments/scale" for a subresource
    verbs: tuple[str, ...]


SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def connect(
    kubeconfig: str | os.PathLike[str] | None = None, namespace: str | None = None
) -> tuple[client.ApiClient, str]:
    """An API client and the namespace to work in.

    Inside a pod (no `kubeconfig` given, KUBERNETES_SERVICE_HOST set): the pod's service
    account and namespace. Otherwise a kubeconfig file ($KUBECONFIG or ~/.kube/config when
    None) and its current context's namespace. `namespace` overrides either.
    """
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = client.Configuration()
        kube_config.load_incluster_config(client_configuration=configuration)
        found = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        return client.ApiClient(configuration), namespace or found
    path = os.fspath(kubeconfig) if kubeconfig is not None else None
    api_client = kube_config.new_client_from_config(config_file=path)
    if namespace is None:
        _, active = kube_config.list_kube_config_contexts(config_file=path)
        namespace = (active.get("context") or {}).get("namespace") or "default"
    return api_client, namespace


def api_call(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Json:
    """Call a client method and return the server's JSON as it sent it (camelCase).

    The client's models are skipped: the code reads the API's own field names, and a
    field the client does not know yet is not lost. ApiException on a non-2xx answer.
    """
    kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
    response = method(*args, _preload_content=False, **kwargs)
    try:
        data = response.data
    finally:
        response.release_conn()
    return orjson.loads(data) if data else {}


def api_text(method: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """Like `api_call` for an answer that is text (a pod's log)."""
    kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
    response = method(*args, _preload_content=False, **kwargs)
    try:
        return bytes(response.data).decode("utf-8", errors="replace")
    finally:
        response.release_conn()


def is_status(error: BaseException, *codes: int) -> bool:
    return isinstance(error, ApiException) and error.status in codes


def api_error(error: BaseException) -> str:
    """The Status message of a failed call, for logs and user-facing errors."""
    if isinstance(error, ApiException):
        with contextlib.suppress(orjson.JSONDecodeError, TypeError):
            body = orjson.loads(error.body or b"")
            if isinstance(body, dict) and body.get("message"):
                return f"{error.status} {body['message']}"
        return f"{error.status} {error.reason}"
    return f"{type(error).__name__}: {error}"
