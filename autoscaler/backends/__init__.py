"""Replica backends: where replicas run (local processes, Kubernetes, static URLs)."""
