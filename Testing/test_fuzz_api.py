"""Schemathesis against the live server: no route in its OpenAPI answers 5xx, and what it refused changed nothing.

The server gets its own datastore (one image, no labels, so no generated request can start a training) and models
folder. The run is seeded and bounded; its report names each failing operation with a curl line to reproduce it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from Testing.conftest import RunningServer, copy_datastore

SEED = 20261128
EXAMPLES = 8  # per operation and phase: ~60 operations, a few minutes on the 2-core dev CPU


@pytest.fixture(scope="module")
def fuzz_server(sample_datastore, tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    running = RunningServer(copy_datastore(sample_datastore, base / "studies", images=("breast1",), labels=False),
                            base / "models", base / "server.log")
    yield running
    running.stop()


def tree_digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under `folder` except MONAI Label's own bookkeeping (its datastore index)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "datastore_v2.json"}


def test_no_route_answers_a_server_error_and_nothing_changes(fuzz_server):
    with urllib.request.urlopen(f"{fuzz_server.url}/medfm/adapters", timeout=30) as response:
        registry_before = json.load(response)
    studies_before = tree_digest(fuzz_server.studies)
    schemathesis = Path(sys.executable).parent / "schemathesis"
    run = subprocess.run([str(schemathesis), "--no-color", "run", f"{fuzz_server.url}/openapi.json", "--checks",
                          "not_a_server_error", "--max-examples", str(EXAMPLES), "--seed", str(SEED),
                          "--workers", "1", "--request-timeout", "120"],
                         capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]

    with urllib.request.urlopen(f"{fuzz_server.url}/medfm/adapters", timeout=30) as response:
        assert json.load(response) == registry_before
    after = tree_digest(fuzz_server.studies)
    changed = sorted(k for k in set(after) | set(studies_before) if after.get(k) != studies_before.get(k))
    assert not changed, f"the fuzzer's requests changed the datastore: {changed}"
