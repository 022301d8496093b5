"""The attacked site's data, imported once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.attacks.support import import_site


@pytest.fixture(scope="session")
def site_datasets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The north hospital's imported datasets folder; each edge works on a copy."""
    return import_site(tmp_path_factory.mktemp("site"))
