"""Score a datastore's images for active learning with the active adapter, skipping unchanged ones."""

from __future__ import annotations

from collections.abc import Callable

from ..segmenter import Segmenter
from ..volume import load_volume
from .score_book import ScoreBook


def score_images(segmenter: Segmenter, book: ScoreBook, images: dict[str, str], n_slices: int = 8,
                 ct_window=None, log: Callable[[str], None] = print) -> dict:
    """`images` maps ids to paths. Returns which were scored and which skipped because their file is unchanged."""
    entries = book.load()
    scored, skipped, failed = [], [], {}
    for image_id, path in sorted(images.items()):
        if book.is_current(image_id, path, entries):
            skipped.append(image_id)
            continue
        try:
            volume = load_volume(path, **({"ct_window": ct_window} if ct_window else {}))
            embedding, uncertainty = segmenter.summarize(volume, book.version, n_slices)
        except Exception as err:  # one unreadable image must not stop the others from being scored
            failed[image_id] = str(err)
            log(f"scoring {image_id} failed: {err}")
            continue
        book.record(image_id, path, uncertainty, embedding.tolist())
        scored.append(image_id)
        log(f"scored {image_id}: uncertainty={uncertainty:.4f}")
    return {"version": book.version, "scored": scored, "skipped": skipped, "failed": failed}
