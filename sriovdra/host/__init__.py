"""Host access: reading sysfs, /dev and host configuration. Knows nothing of Kubernetes."""
