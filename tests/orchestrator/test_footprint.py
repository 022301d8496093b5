"""What the orchestrator loads: a training-only orchestrator keeps its idle memory small
(the benchmark's peak-memory target counts on it), so analyses' scipy stays out until used."""

from __future__ import annotations

import subprocess
import sys


def loaded_after(statement: str) -> set[str]:
    """Top-level packages in ``sys.modules`` of a fresh interpreter after ``statement``."""
    listing = "import sys\nprint(' '.join({m.split('.')[0] for m in sys.modules}))"
    code = f"{statement}\n{listing}"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_orchestrator_app_does_not_import_scipy_or_torch() -> None:
    loaded = loaded_after("import oncofed.orchestrator.app")
    assert "oncofed" in loaded
    assert not loaded & {"scipy", "torch", "pandas", "matplotlib"}


def test_an_analysis_layout_brings_scipy_when_asked_for() -> None:
    loaded = loaded_after(
        "import oncofed.orchestrator.app\n"
        "from oncofed.privacy.layouts import round_layout\n"
        "from oncofed.wire.analysis import AnalysisSpec\n"
        "spec = AnalysisSpec.model_validate({'name': 'km', 'dataset': 'd', 'analysis': "
        "{'type': 'kaplan_meier', 'outcome': {'time': 'os_days', 'event': 'os_event'}}})\n"
        "round_layout(spec, 'analysis', 0, 4)"
    )
    assert "scipy" in loaded
