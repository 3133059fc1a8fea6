"""The one way to start the MedFMAdapt server: MONAI Label's own `start_server` with this app and safe defaults.

Used by `make serve` and by the test fixtures, so what is tested is what a site runs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

APP_DIR = Path(__file__).resolve().parents[1]

# MONAI Label 0.8.5 settings this app needs, as environment defaults a site may still override:
SERVER_ENV = {
    # MLflow's file-store tracking is refused by current MLflow; this app's trainer does not use MLflow at all.
    "MONAI_LABEL_TRACKING_ENABLED": "false",
    # Active-learning scores are refreshed in MONAI Label's background subprocess at start-up, after training
    # and after each next-sample request; unchanged images are skipped, so this stays cheap.
    "MONAI_LABEL_AUTO_UPDATE_SCORING": "true",
    "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false",
    # With a PACS (--studies http://.../dicom-web), every image series is an image (MONAI Label keeps CT only);
    # SEG, SR, RT and other non-image series are always left out.
    "MONAI_LABEL_DICOMWEB_SEARCH_FILTER": "{}",
}


def is_url(studies: str) -> bool:
    """A DICOMweb URL (a PACS) rather than a datastore folder."""
    return str(studies).startswith(("http://", "https://"))


def command(studies: str, host: str, port: int, conf: list[tuple[str, str]]) -> list[str]:
    # What the `monailabel` CLI script runs, with this interpreter rather than whichever `python` is on PATH.
    studies = str(studies) if is_url(studies) else str(Path(studies).resolve())
    cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(APP_DIR),
           "--studies", studies, "--host", host, "--port", str(port)]
    for key, value in conf:
        cmd += ["--conf", key, value]
    return cmd


def server_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    for key, value in SERVER_ENV.items():
        env.setdefault(key, value)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """This script's server as a child process on a free localhost port, for tests and benchmarks."""

    def __init__(self, studies: Path, models: Path, log: Path, conf: dict[str, str] | None = None,
                 env: dict[str, str] | None = None, timeout: float = 300):
        self.studies = studies if is_url(str(studies)) else Path(studies)
        self.models, self.log = Path(models), Path(log)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, __file__, "--studies", str(studies), "--port", str(self.port),
                "--conf", "models_dir", str(models)]
        for key, value in (conf or {}).items():
            args += ["--conf", key, value]
        self._log_handle = open(log, "w")  # noqa: SIM115 - held for the server process lifetime
        started = time.perf_counter()
        self.process = subprocess.Popen(args, stdout=self._log_handle, stderr=subprocess.STDOUT,
                                        cwd=str(APP_DIR.parent), env={**os.environ, **(env or {})},
                                        start_new_session=True)
        self._wait_ready(timeout)
        self.startup_s = time.perf_counter() - started

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/info/", timeout=5) as response:
                    if response.status == 200:
                        return
            except urllib.error.HTTPError as err:
                if err.code == 401:  # authentication is on: the server is up and asks for a token
                    return
                time.sleep(0.5)
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.log.read_text()[-4000:]}")

    def info(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/info/", timeout=60) as response:
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


def _check_dicomweb(url: str) -> None:
    """Say at once, in words, when the PACS cannot be reached, rather than after the model has loaded."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/studies?limit=1", timeout=10):
            pass
    except urllib.error.HTTPError as err:
        if err.code not in (401, 403):  # with credentials set, MONAI Label's own session authenticates
            sys.exit(f"error: the DICOMweb server at {url} answered {err.code} to a QIDO-RS study search")
    except OSError as err:
        sys.exit(f"error: cannot reach the DICOMweb server at {url}: {err}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--studies", default="datastore")
    parser.add_argument("--host", default="127.0.0.1", help="bind address; 127.0.0.1 unless you mean to expose it")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--conf", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    args = parser.parse_args(argv)
    if is_url(args.studies):
        _check_dicomweb(args.studies)
    elif not Path(args.studies).is_dir():
        sys.exit(f"error: datastore folder {args.studies} does not exist; `make serve` builds the sample one")
    cmd = command(args.studies, args.host, args.port, args.conf)
    print("starting:", " ".join(cmd), flush=True)
    os.execvpe(cmd[0], cmd, server_env())


if __name__ == "__main__":
    main()
