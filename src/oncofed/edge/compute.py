"""torch at the edge, imported on first use.

An edge that only runs analyses (numpy and scipy) never imports torch (some 190 MB of memory
and a second of start-up): the task runner reaches local training through ``LazyModule``, and
the first training or evaluation imports it, then applies the process's thread settings
(``torch_threads``, once per process however many sites it serves).
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from types import ModuleType
from typing import Any

_lock = threading.Lock()
_threads = 1
_configured = False


def torch_threads(threads: int) -> None:
    """Use ``threads`` CPU threads for local training (and one inter-op thread): applied when
    torch is first imported by the runner, or now if it was already."""
    global _threads
    with _lock:
        _threads = threads
        if _configured:
            import torch

            torch.set_num_threads(threads)


def _configure() -> None:
    """Apply the thread settings to torch, once per process (torch refuses to change the
    inter-op pool once it has been used)."""
    global _configured
    with _lock:
        if _configured:
            return
        import torch

        torch.set_num_threads(_threads)
        # set already, or the pool already ran work in this process: leave it
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(1)
        _configured = True


class LazyModule:
    """A module imported (and torch configured, ``_configure``) on first attribute access."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def _load(self) -> ModuleType:
        if self._module is None:
            module = importlib.import_module(self._name)
            _configure()
            self._module = module
        return self._module

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return getattr(self._load(), attribute)

    def __repr__(self) -> str:
        state = "imported" if self._module is not None else "not imported yet"
        return f"<lazy module {self._name!r} ({state})>"
