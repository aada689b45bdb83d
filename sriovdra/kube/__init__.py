"""Kubernetes adapters (the official `kubernetes` client): claims, ResourceSlices, claim status."""
