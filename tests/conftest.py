import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


CORE = ("models", "exporters", "energy", "chip")  # the core suite: -m core (tools/compat.sh runs it on the edge versions)


def pytest_collection_modifyitems(config, items):
    root = config.rootpath / "tests"
    for item in items:
        parts = item.path.relative_to(root).parts if item.path.is_relative_to(root) else ()
        if parts and parts[0] in CORE:
            item.add_marker(pytest.mark.core)
