"""The layering the architecture relies on: importing a module must not pull in a layer above it."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module, forbidden",
    [
        ("ablations.store", "ablations.engine.train"),  # the run folder's contract does not depend on the engine
        ("convmixer.model", "ablations"),  # convmixer/ is the ground floor
        ("convmixer.count", "ablations"),
        ("analysis.report", "ablations.sweep"),  # the report reads stores; it parses values with ablations.config
    ],
)
def test_a_module_does_not_import_the_layer_above(module, forbidden):
    code = f"import sys, {module}; print(*sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert [name for name in loaded if name == forbidden or name.startswith(forbidden + ".")] == []
