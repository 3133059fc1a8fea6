"""Fixtures that start the real MedFMAdapt MONAI Label server on a free localhost port, as `make serve` does."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVE = ROOT / "monailabel_app" / "scripts" / "serve.py"
BUILD = ROOT / "monailabel_app" / "scripts" / "build_sample_datastore.py"
SAMPLE = ROOT / "build" / "sample_datastore"  # built once per checkout, copied per server
IMAGE_IDS = ("brain1", "brain2", "breast1", "lung1", "lung2", "mni152")


@pytest.fixture(scope="session")
def sample_datastore() -> Path:
    """The sample datastore from real registry data (pyradiomics sdist + nilearn), built as `make serve` builds it."""
    if not (SAMPLE / ".complete").exists():
        subprocess.run([sys.executable, str(BUILD), "--out", str(SAMPLE), "--cache", str(ROOT / "build" / "cache")],
                       check=True)
    return SAMPLE


def copy_datastore(source: Path, dest: Path, images: tuple[str, ...] = IMAGE_IDS, labels: bool = True) -> Path:
    """A fresh datastore folder holding `images` (and their final labels, if `labels`)."""
    (dest / "labels" / "final").mkdir(parents=True)
    for image_id in images:
        shutil.copy(source / f"{image_id}.nii.gz", dest / f"{image_id}.nii.gz")
        if labels:
            shutil.copy(source / "labels" / "final" / f"{image_id}.nii.gz",
                        dest / "labels" / "final" / f"{image_id}.nii.gz")
    return dest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    def __init__(self, studies: Path, models: Path, log: Path, conf: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.studies, self.models, self.log = studies, models, log
        args = [sys.executable, str(SERVE), "--studies", str(studies), "--port", str(self.port),
                "--conf", "models_dir", str(models)]
        for key, value in (conf or {}).items():
            args += ["--conf", key, value]
        # Background rescoring (on by default for a site) would compete with the tests for the 2 CPU cores;
        # the active-learning tests start scoring themselves.
        env = {**os.environ, "MONAI_LABEL_SESSION_PATH": str(models / "sessions"),
               "MONAI_LABEL_AUTO_UPDATE_SCORING": "false"}
        self._log_handle = open(log, "w")  # noqa: SIM115 - held for the server process lifetime
        self.process = subprocess.Popen(args, stdout=self._log_handle, stderr=subprocess.STDOUT, cwd=str(ROOT),
                                        env=env, start_new_session=True)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/info/", timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.log.read_text()[-4000:]}")

    def info(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/info/", timeout=30) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log_handle.close()


@pytest.fixture(scope="session")
def server(sample_datastore, tmp_path_factory) -> RunningServer:
    """One server over a copy of the whole sample datastore, shared by the tests that do not train."""
    base = tmp_path_factory.mktemp("server")
    running = RunningServer(copy_datastore(sample_datastore, base / "studies"), base / "models", base / "server.log")
    yield running
    running.stop()


@pytest.fixture(scope="session")
def monailabel_server(server) -> str:
    """The shared server's base URL (the Slicer client tests use this name)."""
    return server.url


@pytest.fixture
def client(server, tmp_path):
    """The stock MONAI Label client, as SlicerMONAILabel and scripts use it."""
    from monailabel.client import MONAILabelClient

    return MONAILabelClient(server.url, tmpdir=str(tmp_path))
