"""The driver core: what happens to a claim, independent of gRPC and Kubernetes."""
