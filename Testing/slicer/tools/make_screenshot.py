"""Regenerate the committed panel screenshot: python Testing/slicer/tools/make_screenshot.py"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from Testing.slicer.ui_preview import REPO, screenshot  # noqa: E402

if __name__ == "__main__":
    print(screenshot(REPO / "Resources/Screenshots/panel.png"))
