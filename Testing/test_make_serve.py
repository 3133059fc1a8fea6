"""`make serve`, exactly as README gives it, answers /info/ with the FM's infer tasks and trainer."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request

from Testing.conftest import ROOT, free_port


def test_make_serve_answers_info(sample_datastore, tmp_path):
    studies = tmp_path / "studies"
    shutil.copytree(sample_datastore, studies)  # holds .complete, so make does not rebuild it
    port = free_port()
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - held while the server runs
    proc = subprocess.Popen(["make", "-s", "serve", f"PORT={port}", f"STUDIES={studies}"], cwd=str(ROOT),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "MAKEFLAGS": ""})
    try:
        info = None
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/info/", timeout=5) as response:
                    info = json.loads(response.read())
                    break
            except OSError:
                time.sleep(1)
        assert info is not None, (tmp_path / "serve.log").read_text()[-3000:]
        assert {"medsam_interactive", "medsam_auto"} <= set(info["models"])
        assert "medsam_adapt" in info["trainers"]
        assert info["datastore"]["total"] == 6 and info["datastore"]["completed"] == 6
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()


def test_make_serve_takes_a_dicomweb_url():
    """With a PACS URL as STUDIES, make serve builds no datastore folder and hands the URL to serve.py as it is."""
    url = "http://127.0.0.1:8042/dicom-web"
    plan = subprocess.run(["make", "-n", "serve", f"STUDIES={url}"], cwd=str(ROOT),
                          capture_output=True, text=True, env={**os.environ, "MAKEFLAGS": ""})
    assert plan.returncode == 0, plan.stderr
    assert "build_sample_datastore" not in plan.stdout
    assert f"serve.py --studies {url} " in plan.stdout
