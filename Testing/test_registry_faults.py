"""Registry faults with real processes and a real full disk: nothing half-written ever becomes a version."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from lib.medfm.adapter_store import BASE, AdapterStore
from lib.medfm.files import write_json_atomic
from lib.medfm.manifest import Manifest
from Testing.conftest import ROOT

WRITER_PRELUDE = f"""
import os, sys, time, json
sys.path.insert(0, {str(ROOT / "monailabel_app")!r})
from lib.medfm.adapter_store import AdapterStore
from lib.medfm.manifest import Manifest
store = AdapterStore(sys.argv[1], "fm")
"""


def run_writer(body: str, root, *args) -> subprocess.Popen:
    code = WRITER_PRELUDE + textwrap.dedent(body)
    return subprocess.Popen([sys.executable, "-c", code, str(root), *map(str, args)], stdout=subprocess.PIPE,
                            text=True)


def make_version(store: AdapterStore, note: str) -> str:
    staging = store.staging()
    (staging / "weights.safetensors").write_bytes(os.urandom(1024))
    return store.commit(staging, Manifest(note=note))


def test_writer_killed_mid_version_leaves_no_version(tmp_path):
    store = AdapterStore(tmp_path, "fm")
    make_version(store, "kept")
    writer = run_writer("""
        staging = store.staging()
        with open(staging / "weights.safetensors", "wb") as f:
            print("writing", flush=True)
            while True:
                f.write(os.urandom(1 << 16)); f.flush(); time.sleep(0.01)
    """, tmp_path)
    assert writer.stdout.readline().strip() == "writing"
    time.sleep(0.3)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert store.versions() == ["v0001"]  # the torn write is invisible
    assert list(store.root.glob(".staging-*"))
    store.clean_stale_staging()  # its writer is dead, so it is swept
    assert not list(store.root.glob(".staging-*")) and store.versions() == ["v0001"]


def test_pointer_survives_a_writer_killed_at_random_moments(tmp_path):
    store = AdapterStore(tmp_path, "fm")
    versions = [make_version(store, str(n)) for n in range(3)]
    for attempt in range(5):
        writer = run_writer("""
            import itertools
            print("go", flush=True)
            for v in itertools.cycle(["v0001", "v0002", "v0003"]):
                store.set_active(v)
                if v == "v0003":
                    store.rollback()
        """, tmp_path)
        writer.stdout.readline()
        time.sleep(0.05 + 0.07 * attempt)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        pointer = json.loads((store.root / "active.json").read_text())  # always whole JSON
        assert store.active() in versions + [BASE] and pointer["version"] in versions + [BASE]
    store.clean_stale_staging()
    assert not list(store.root.glob(".tmp-*"))


def test_two_processes_committing_at_once_get_distinct_ids(tmp_path):
    body = """
        for n in range(5):
            staging = store.staging()
            (staging / "weights.safetensors").write_bytes(os.urandom(4096))
            print(store.commit(staging, Manifest(note=sys.argv[2])), flush=True)
    """
    writers = [run_writer(body, tmp_path, name) for name in ("a", "b")]
    ids = [line.strip() for w in writers for line in w.communicate()[0].splitlines()]
    assert all(w.returncode == 0 for w in writers)
    assert len(ids) == 10 and len(set(ids)) == 10
    store = AdapterStore(tmp_path, "fm")
    assert store.versions() == sorted(ids)
    assert sorted(store.manifest(v).note for v in ids) == ["a"] * 5 + ["b"] * 5


def test_deleted_ids_are_never_reused(tmp_path):
    store = AdapterStore(tmp_path, "fm")
    first, second = make_version(store, "1"), make_version(store, "2")
    store.delete(second)
    assert make_version(store, "3") == "v0003" and first == "v0001"


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 1 MiB filesystem (tmpfs), so writes fail with ENOSPC exactly as a full disk does."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_disk_full_during_a_version_or_the_pointer_loses_nothing(tiny_disk):
    store = AdapterStore(tiny_disk, "fm")
    kept = make_version(store, "fits")
    store.set_active(kept)
    staging = store.staging()
    with pytest.raises(OSError):
        (staging / "weights.safetensors").write_bytes(os.urandom(2 << 20))  # 2 MiB on a 1 MiB disk
    store.discard(staging)
    filler = tiny_disk / f"filler-{uuid.uuid4().hex}"
    with pytest.raises(OSError), open(filler, "wb") as f:  # fill the disk to the last byte
        while True:
            f.write(b"\0" * 4096)
            f.flush()
    with pytest.raises(OSError):
        write_json_atomic(store.root / "active.json", {"version": BASE, "history": ["x" * 100_000]})
    filler.unlink()
    assert store.versions() == [kept] and store.active() == kept
    store.clean_stale_staging()
    assert not list(store.root.glob(".tmp-*")) and not list(store.root.glob(".staging-*"))
