"""`mlfe serve`'s settings: read once from flags and environment into frozen dataclasses.

Apart from router/serve.py so the `mlfe` command line offers the same flags without
importing the server (uvicorn, Starlette, the backends, the `kubernetes` client).
Flags win over environment variables, which win over defaults; the variables are the
ones deploy/kubernetes/router-deployment.yaml sets.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from autoscaler.backends.kube_manifests import DEFAULT_IMAGE

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_STATE_DIR = Path("~/.mlfe")
# router.dataplane.DEFAULT_MAX_BODY (not imported: it pulls in the data plane).
DEFAULT_MAX_BODY = 100 * 1024 * 1024
BACKENDS = ("local", "kubernetes")
LOG_LEVELS = ("debug", "info", "warning", "error")
# client-go's leader election defaults: 15 s lease, renew within 10, try every 2.
DEFAULT_LEASE_DURATION = 15

BackendName = Literal["local", "kubernetes"]


class ServeError(Exception):
    """mlfe cannot start; the message says what to change."""


@dataclass(frozen=True)
class KubernetesSettings:
    """Where a router pod finds its cluster and what it runs there."""

    # None: the pod's service account when in a pod, else $KUBECONFIG or ~/.kube/config.
    kubeconfig: Path | None = None
    # None: the pod's namespace, or the kubeconfig context's.
    namespace: str | None = None
    # This router's name on the Lease: its pod's name (None: the host name, which in a
    # pod is the pod's name too).
    identity: str | None = None
    runtime_image: str = DEFAULT_IMAGE
    # Model files and source folders: a PersistentVolumeClaim the router mounts at
    # `models_dir`; without a claim, `models_dir` is a hostPath (single-node clusters).
    models_claim: str | None = None
    models_dir: Path | None = None
    # Seconds a crashed leader holds the autoscaler before another router takes over.
    lease_duration: int = DEFAULT_LEASE_DURATION

    def __post_init__(self) -> None:
        if self.lease_duration < 1:
            raise ValueError(f"--lease-duration ({self.lease_duration}) must be at least 1 s")

    @property
    def renew_deadline(self) -> float:
        """A leader that could not renew for this long stops acting (before it expires)."""
        return self.lease_duration * 2 / 3

    @property
    def retry_period(self) -> float:
        return self.lease_duration * 2 / 15


@dataclass(frozen=True)
class ServeSettings:
    """How `mlfe serve` runs. `public_url` is the base of the scoring URIs it hands out
    (default: http://HOST:PORT, with this machine's name when bound to every address)."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    state_dir: Path = DEFAULT_STATE_DIR
    backend: BackendName = "local"
    log_level: str = "info"
    max_body: int = DEFAULT_MAX_BODY
    public_url: str | None = None
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)


def add_arguments(parser: argparse.ArgumentParser, *, state_dir: bool = True) -> None:
    """`mlfe serve`'s flags, for router.serve's parser and the CLI's subcommand (which
    defines --state-dir itself when `state_dir` is False)."""
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address (default {DEFAULT_HOST})")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any)"
    )
    if state_dir:
        parser.add_argument(
            "--state-dir",
            type=Path,
            default=None,
            help="services, keys and replica logs (env MLFE_STATE_DIR; default ~/.mlfe)",
        )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="local",
        help="where replicas run: processes here (default) or Deployments in a cluster",
    )
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    parser.add_argument(
        "--max-body",
        type=int,
        default=DEFAULT_MAX_BODY,
        help="largest scoring request body in bytes (default 100 MB)",
    )
    parser.add_argument(
        "--public-url", default=None, help="base of the scoring URIs shown to users"
    )
    cluster = parser.add_argument_group("with --backend kubernetes")
    cluster.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        help="a kubeconfig file (default: the pod's service account in a cluster, else"
        " $KUBECONFIG or ~/.kube/config)",
    )
    cluster.add_argument(
        "--namespace",
        default=None,
        help="where services live (env MLFE_NAMESPACE; default: the pod's or the context's)",
    )
    cluster.add_argument(
        "--runtime-image",
        default=None,
        help=f"the image replicas run (env MLFE_RUNTIME_IMAGE; default {DEFAULT_IMAGE})",
    )
    cluster.add_argument(
        "--models-claim",
        default=None,
        help="PersistentVolumeClaim with model files and sources (env MLFE_MODELS_CLAIM)",
    )
    cluster.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="where this router sees the models volume (env MLFE_MODELS_DIR; default"
        " /var/mlfe/models with a claim; without one, a hostPath on every node)",
    )
    cluster.add_argument(
        "--lease-duration",
        type=int,
        default=None,
        help="seconds before another router takes over the autoscaler from a leader that"
        f" stopped renewing (default {DEFAULT_LEASE_DURATION})",
    )


def settings_from(
    args: argparse.Namespace, environ: Mapping[str, str] = os.environ
) -> ServeSettings:
    """The settings a parsed command line and the environment describe."""

    def env(name: str) -> str | None:
        return environ.get(name, "").strip() or None

    state_dir = getattr(args, "state_dir", None) or env("MLFE_STATE_DIR") or DEFAULT_STATE_DIR
    models_dir = args.models_dir or env("MLFE_MODELS_DIR")
    claim = args.models_claim or env("MLFE_MODELS_CLAIM")
    if claim and not models_dir:
        models_dir = "/var/mlfe/models"
    kubernetes = KubernetesSettings(
        kubeconfig=args.kubeconfig,
        namespace=args.namespace or env("MLFE_NAMESPACE"),
        identity=env("MLFE_POD_NAME"),
        runtime_image=args.runtime_image or env("MLFE_RUNTIME_IMAGE") or DEFAULT_IMAGE,
        models_claim=claim,
        models_dir=Path(models_dir) if models_dir else None,
        lease_duration=(
            DEFAULT_LEASE_DURATION if args.lease_duration is None else args.lease_duration
        ),
    )
    return ServeSettings(
        host=args.host,
        port=args.port,
        state_dir=Path(state_dir).expanduser(),
        backend=args.backend,
        log_level=args.log_level,
        max_body=args.max_body,
        public_url=args.public_url,
        kubernetes=kubernetes,
    )
