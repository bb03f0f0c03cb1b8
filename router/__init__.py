"""The front door: authentication, traffic split, dispatch to replicas, management API."""
