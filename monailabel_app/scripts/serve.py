"""The one way to start the MedFMAdapt server: MONAI Label's own `start_server` with this app and safe defaults.

Used by `make serve` and by the test fixtures, so what is tested is what a site runs.
"""

from __future__ import annotations

import argparse
import os
import sys
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
}


def command(studies: str, host: str, port: int, conf: list[tuple[str, str]]) -> list[str]:
    # What the `monailabel` CLI script runs, with this interpreter rather than whichever `python` is on PATH.
    cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(APP_DIR),
           "--studies", str(Path(studies).resolve()), "--host", host, "--port", str(port)]
    for key, value in conf:
        cmd += ["--conf", key, value]
    return cmd


def server_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    for key, value in SERVER_ENV.items():
        env.setdefault(key, value)
    return env


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--studies", default="datastore")
    parser.add_argument("--host", default="127.0.0.1", help="bind address; 127.0.0.1 unless you mean to expose it")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--conf", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    args = parser.parse_args(argv)
    if not Path(args.studies).is_dir():
        sys.exit(f"error: datastore folder {args.studies} does not exist; `make serve` builds the sample one")
    cmd = command(args.studies, args.host, args.port, args.conf)
    print("starting:", " ".join(cmd), flush=True)
    os.execvpe(cmd[0], cmd, server_env())


if __name__ == "__main__":
    main()
