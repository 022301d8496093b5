"""The researcher's and operator's Python client: ``from oncofed.client import Client``."""

from oncofed.client._client import Client, ClientError, load_spec
from oncofed.client.report import build_report, curves, final_metrics, write_result

__all__ = [
    "Client",
    "ClientError",
    "build_report",
    "curves",
    "final_metrics",
    "load_spec",
    "write_result",
]
