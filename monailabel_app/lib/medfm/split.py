"""Which of a site's images training may use and which are held out: the one rule, for the server's datastore
(lib/datastore.py) and a federation site's folder (federated/site.py) alike.

A site marks an image held out in its info (`held_out`); a held-out image is evaluated on and never trained on,
not even its pixels by self-supervised pretraining, so the guard's evidence comes from images no adapter has seen.
"""

from __future__ import annotations

from collections.abc import Iterable

HELD_OUT = "held_out"  # the image-info key that marks an image held out


def split_ids(images: Iterable[tuple[str, dict | None]], only: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(ids training may use, held-out ids), each sorted, from (image id, image info) pairs. `only`, when given,
    narrows the training side to those ids; it never adds a held-out image nor removes one from the held-out side."""
    train, held = [], []
    for image_id, info in sorted(images, key=lambda pair: pair[0]):
        if (info or {}).get(HELD_OUT):
            held.append(image_id)
        elif not only or image_id in only:
            train.append(image_id)
    return train, held
