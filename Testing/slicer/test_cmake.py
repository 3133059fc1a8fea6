"""The extension's CMake configures against a stand-in Slicer_DIR whose macros check the file lists.

Proves: both CMakeLists parse, every listed script/resource exists, every .py/.ui/.png under MedFMAdapt/ is
listed, the module test is registered and the metadata is set. Does not prove Slicer builds or loads it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FAKE_SLICER = Path(__file__).resolve().parent / "fake_slicer"
CMAKE = shutil.which("cmake")
pytestmark = pytest.mark.skipif(CMAKE is None, reason="cmake is not installed")


def configure(source: Path, build: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CMAKE, "-S", str(source), "-B", str(build), f"-DSlicer_DIR={FAKE_SLICER}"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def copy_extension(target: Path) -> Path:
    target.mkdir(parents=True)
    shutil.copy(REPO / "CMakeLists.txt", target / "CMakeLists.txt")
    shutil.copytree(REPO / "MedFMAdapt", target / "MedFMAdapt", ignore=shutil.ignore_patterns("__pycache__"))
    return target


def test_extension_configures_and_lists_every_file(tmp_path):
    result = configure(REPO, tmp_path / "build")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "module MedFMAdapt: all listed files exist, no module file unlisted" in result.stdout
    assert "python unittest MedFMAdapt.py registered" in result.stdout
    assert "extension MedFMAdapt (Segmentation) modules: MedFMAdapt" in result.stdout


def test_missing_listed_file_fails_configure(tmp_path):
    source = copy_extension(tmp_path / "src")
    (source / "MedFMAdapt/Resources/UI/MedFMAdapt.ui").unlink()
    result = configure(source, tmp_path / "build")
    assert result.returncode != 0
    assert "resource listed but missing" in result.stderr


def test_unlisted_module_file_fails_configure(tmp_path):
    source = copy_extension(tmp_path / "src")
    (source / "MedFMAdapt/MedFMAdaptLib/forgotten.py").write_text("")
    result = configure(source, tmp_path / "build")
    assert result.returncode != 0
    assert "present but not listed" in result.stderr and "forgotten.py" in result.stderr
