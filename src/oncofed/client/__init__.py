"""The researcher's and operator's Python client: ``from oncofed.client import Client``.

``write_result`` and ``write_job`` are imported on first use (they bring in matplotlib).
"""

from typing import TYPE_CHECKING, Any

from oncofed.client._client import Client, ClientError, load_spec
from oncofed.client.report import build_report, curves, final_metrics

if TYPE_CHECKING:
    from oncofed.client.plots import write_job, write_result


def __getattr__(name: str) -> Any:
    if name in ("write_result", "write_job"):
        from oncofed.client import plots

        return getattr(plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Client",
    "ClientError",
    "build_report",
    "curves",
    "final_metrics",
    "load_spec",
    "write_job",
    "write_result",
]
