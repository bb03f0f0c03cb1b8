"""Scaling policy, the control loop that applies it, and the replica backends."""
