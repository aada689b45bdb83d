"""NRI (Node Resource Interface) plugin: pod and container lifecycle events from the container runtime."""
