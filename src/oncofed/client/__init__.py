"""The researcher's and operator's Python client: ``from oncofed.client import Client``.

``Client.download_result(job_id, folder)`` writes any job's result; ``load_model(path)`` reads
a training job's ``model.safetensors`` and predicts from a table. Every name is imported on
first use: the client brings in httpx and the wire's models, ``write_result``, ``write_job``
and the model's names matplotlib and scipy, which the CLI's help does without.
"""

from typing import TYPE_CHECKING

from oncofed._lazy import lazy_names

if TYPE_CHECKING:
    from oncofed.client._client import Client, ClientError, load_spec
    from oncofed.client.model import Model, ModelError, ModelMetadata, load_model
    from oncofed.client.plots import write_job, write_result
    from oncofed.client.report import build_report, curves, final_metrics, provenance

_LAZY = {
    "Client": "_client",
    "ClientError": "_client",
    "load_spec": "_client",
    "build_report": "report",
    "curves": "report",
    "final_metrics": "report",
    "provenance": "report",
    "write_result": "plots",
    "write_job": "plots",
    "Model": "model",
    "ModelError": "model",
    "ModelMetadata": "model",
    "load_model": "model",
}

__getattr__ = lazy_names(__name__, {name: f"{__name__}.{module}" for name, module in _LAZY.items()})


__all__ = [
    "Client",
    "ClientError",
    "Model",
    "ModelError",
    "ModelMetadata",
    "build_report",
    "curves",
    "final_metrics",
    "load_model",
    "load_spec",
    "provenance",
    "write_job",
    "write_result",
]
