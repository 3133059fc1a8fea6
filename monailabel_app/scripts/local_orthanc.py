"""A real Orthanc PACS with DICOMweb on localhost, from Debian's own packages, run as a non-root process.

For tests and for a site that wants to try the DICOMweb path before pointing the server at its PACS. The packages
(Orthanc 1.10.1, GPL-3+; its DICOMweb plugin 1.7, AGPL-3+; eight libraries) are fetched with `apt-get download`
from the machine's Debian archive and unpacked with `dpkg -x`: nothing is installed system-wide. Run alone, this
script starts Orthanc, uploads the sample series (see sample_pacs.py) and waits: `make pacs`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PACKAGES = ("orthanc", "orthanc-dicomweb", "libcivetweb1", "libboost-locale1.74.0", "libboost-regex1.74.0",
            "libboost-thread1.74.0", "libdcmtk17", "liblua5.3-0", "libpugixml1v5", "libwrap0")
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = ROOT / "build" / "cache" / "orthanc"


def unpacked_orthanc(cache: Path = DEFAULT_CACHE) -> Path:
    """The folder the packages are unpacked into (fetched and unpacked once per checkout)."""
    root = cache / "root"
    if (root / "usr" / "sbin" / "Orthanc").exists():
        return root
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    for package in PACKAGES:
        if not list(debs.glob(f"{package}_*.deb")):
            proc = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"error: `apt-get download {package}` failed; Orthanc for the DICOMweb tests comes from "
                         f"this machine's Debian archive (bookworm):\n{proc.stderr[-1500:]}")
    staging = Path(tempfile.mkdtemp(prefix="root-", dir=cache))
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True)
    os.chmod(staging, 0o755)  # mkdtemp makes it private; the unprivileged Orthanc user must read it
    shutil.rmtree(root, ignore_errors=True)
    staging.rename(root)
    return root


class OrthancProcess:
    """Orthanc on free localhost ports with DICOMweb at `/dicom-web`, its storage in a fresh folder; as root it
    drops to `nobody` (a PACS never needs root)."""

    def __init__(self, cache: Path = DEFAULT_CACHE, http_port: int | None = None, timeout: float = 30):
        from scripts.serve import free_port

        root = unpacked_orthanc(cache)
        self.storage = Path(tempfile.mkdtemp(prefix="orthanc-"))  # in /tmp, reachable by the dropped user
        self.http_port = http_port or free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.dicomweb = f"{self.url}/dicom-web"
        config = {
            "Name": "MedFMAdapt test PACS", "StorageDirectory": str(self.storage / "db"),
            "IndexDirectory": str(self.storage / "db"), "HttpPort": self.http_port, "DicomPort": free_port(),
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "Plugins": [str(next((root / "usr" / "lib" / "orthanc").glob("libOrthancDicomWeb.so*")))],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
        }
        (self.storage / "orthanc.json").write_text(json.dumps(config, indent=1))
        env = {**os.environ, "LD_LIBRARY_PATH": str(root / "usr" / "lib" / "x86_64-linux-gnu"),
               "DCMDICTPATH": str(root / "usr" / "share" / "libdcmtk17" / "dicom.dic")}
        drop = {}
        if os.geteuid() == 0:
            shutil.chown(self.storage, "nobody")
            os.chmod(self.storage, 0o755)
            drop = {"user": "nobody", "group": "nogroup", "extra_groups": []}
        self.log = self.storage / "orthanc.log"
        self._log_handle = open(self.log, "w")  # noqa: SIM115 - held for the process lifetime
        self.process = subprocess.Popen([str(root / "usr" / "sbin" / "Orthanc"), str(self.storage / "orthanc.json")],
                                        stdout=self._log_handle, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True, **drop)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.dicomweb}/studies", timeout=2):
                    return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {timeout:.0f} s:\n{self.log.read_text()[-3000:]}")

    def get_json(self, path: str):
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_handle.close()
        shutil.rmtree(self.storage, ignore_errors=True)

    def __enter__(self) -> OrthancProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    from scripts.sample_pacs import build_sample_series, upload

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8042)
    parser.add_argument("--studies", default=str(ROOT / "build" / "sample_datastore"),
                        help="the sample datastore whose images (and labels) become DICOM series (and SEGs)")
    args = parser.parse_args()
    series = build_sample_series(Path(args.studies), ROOT / "build" / "sample_dicom")
    with OrthancProcess(http_port=args.port) as orthanc:
        count = upload(series, orthanc.dicomweb)
        print(f"Orthanc is up with {count} instances; DICOMweb at {orthanc.dicomweb}\n"
              f"  start the server on it:  make serve STUDIES={orthanc.dicomweb}\n  stop with Ctrl-C", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            orthanc.process.wait()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
