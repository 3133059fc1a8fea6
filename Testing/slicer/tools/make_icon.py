"""Draw the module icon (MedFMAdapt/Resources/Icons/MedFMAdapt.png, 128x128): a slice, a contour, an adapter."""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 128


def draw() -> Image.Image:
    """A dark rounded tile with a grey 'scan', an orange segmentation contour and a small blue adapter block."""
    image = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    d = ImageDraw.Draw(image)
    d.rounded_rectangle((4, 4, 123, 123), radius=22, fill=(28, 40, 58, 255))
    d.ellipse((20, 22, 108, 106), fill=(120, 128, 140, 255))
    d.ellipse((34, 34, 94, 94), fill=(165, 172, 182, 255))
    d.ellipse((50, 44, 86, 78), outline=(255, 150, 30, 255), width=6)
    d.rounded_rectangle((76, 84, 116, 116), radius=6, fill=(40, 130, 230, 255), outline=(255, 255, 255, 255), width=3)
    d.line((84, 100, 108, 100), fill=(255, 255, 255, 255), width=4)
    d.line((96, 90, 96, 110), fill=(255, 255, 255, 255), width=4)
    return image


if __name__ == "__main__":
    default = Path(__file__).resolve().parents[3] / "MedFMAdapt/Resources/Icons/MedFMAdapt.png"
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    draw().save(out)
    print(out)
