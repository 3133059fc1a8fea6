"""Schemathesis against the live server: no route in its OpenAPI answers 5xx, and what it refused changed nothing.

Two stores: a server of its own with one image and no labels (the routes' "nothing here yet" paths), and the shared
test server over the whole labelled sample datastore (the paths a site's server takes once it has labels: labelled
listings, held-out candidates, next samples). On the shared one no generated request starts a training either:
a trainer's name is never generated, and an unknown one is a 404 before any job. The run is seeded and bounded;
its report names each failing operation with a curl line to reproduce it.
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
# store -> (its server fixture, schemathesis phases, examples per operation and phase). The coverage phase (each
# parameter's boundary and invalid values, ~800 requests whatever the examples) does not depend on the data, so it
# runs once, on the labelled store; the random phases run on both, 4 examples each: ~1,240 requests in all, what
# one store at 8 examples cost before (~50 operations; ~25 s on the 2-core dev CPU).
STORES = {"unlabelled": ("fuzz_server", "fuzzing,stateful", 4),
          "labelled": ("server", "coverage,fuzzing,stateful", 4)}


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


def registry_state(url: str) -> tuple[dict, dict]:
    """The adapter registry and the held-out set, as the server reports them."""
    out = []
    for path in ("/medfm/adapters", "/medfm/heldout"):
        with urllib.request.urlopen(f"{url}{path}", timeout=30) as response:
            out.append(json.load(response))
    return out[0], out[1]


@pytest.mark.parametrize("store", list(STORES))
def test_no_route_answers_a_server_error_and_nothing_changes(store, request):
    fixture, phases, examples = STORES[store]
    fuzz_server = request.getfixturevalue(fixture)
    registry_before = registry_state(fuzz_server.url)
    studies_before = tree_digest(fuzz_server.studies)
    schemathesis = Path(sys.executable).parent / "schemathesis"
    run = subprocess.run([str(schemathesis), "--no-color", "run", f"{fuzz_server.url}/openapi.json", "--checks",
                          "not_a_server_error", "--phases", phases, "--max-examples", str(examples),
                          "--seed", str(SEED), "--workers", "1", "--request-timeout", "120"],
                         capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]

    assert registry_state(fuzz_server.url) == registry_before
    after = tree_digest(fuzz_server.studies)
    changed = sorted(k for k in set(after) | set(studies_before) if after.get(k) != studies_before.get(k))
    assert not changed, f"the fuzzer's requests changed the datastore: {changed}"
