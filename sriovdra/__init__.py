"""sriovdra: a Kubernetes DRA driver for SR-IOV virtual functions and InfiniBand ports."""

__version__ = "0.1.0"
