"""An in-repo Kubernetes API server, controllers and kubelet for mlfe's tests.

The real `kubernetes` client talks to it over HTTP; pods run as local processes on
loopback addresses. See `cluster.py` for the entry point and knobs.
"""

from tests.kube.cluster import Cluster, start_cluster
from tests.kube.faults import Fault

__all__ = ["Cluster", "Fault", "start_cluster"]
