"""Fixtures that start the real MedFMAdapt MONAI Label server on a free localhost port, as `make serve` does."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from scripts.serve import ServerProcess, free_port  # noqa: F401 - free_port is used by test_make_serve

ROOT = Path(__file__).resolve().parents[1]
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


class RunningServer(ServerProcess):
    """The server `make serve` starts, on a free port, with background rescoring off: it would compete with the
    tests for the 2 CPU cores (the active-learning tests start scoring themselves)."""

    def __init__(self, studies: Path, models: Path, log: Path, conf: dict[str, str] | None = None,
                 env: dict[str, str] | None = None):
        super().__init__(studies, models, log, conf, env={"MONAI_LABEL_SESSION_PATH": str(models / "sessions"),
                                                           "MONAI_LABEL_AUTO_UPDATE_SCORING": "false", **(env or {})},
                         timeout=180)


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


@pytest.fixture(scope="session")
def auth_server(sample_datastore, tmp_path_factory):
    """A real OpenID Connect provider (npm oidc-provider, Testing/idp) with a user in each role, and one server
    over breast1 and brain2 with authentication on, checking tokens against it."""
    from Testing.oidc_provider import SITE_USERS, OIDCProvider, new_key

    base = tmp_path_factory.mktemp("auth")
    idp = OIDCProvider(base, SITE_USERS, free_port(), access_token_ttl=3600)
    idp.start([new_key("k1")])
    env = {"MONAI_LABEL_AUTH_ENABLE": "true", "MONAI_LABEL_AUTH_REALM_URI": idp.issuer,
           "MONAI_LABEL_AUTH_CLIENT_ID": idp.client_id,
           "MONAI_LABEL_AUTH_JWKS_COOLDOWN": "1"}  # so the key rotation test need not wait 30 s
    try:
        server = RunningServer(copy_datastore(sample_datastore, base / "studies", images=("breast1", "brain2")),
                               base / "models", base / "server.log", env=env)
    except BaseException:
        idp.stop()
        raise
    yield idp, server
    server.stop()
    idp.stop()
