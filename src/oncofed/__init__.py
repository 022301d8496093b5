"""oncofed: federated learning and federated analytics across cancer centres."""

__version__ = "0.1.0"
