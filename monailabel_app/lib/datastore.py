"""MONAI Label's local datastore, with the checks a hospital needs before anything is written to it.

Ids and tags never name a path outside the datastore; uploads must be readable 3D scalar volumes; labels must lie
on their image's grid and hold integer values. A refused request raises a 4xx and changes nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable
from typing import Any

from fastapi import HTTPException
from filelock import FileLock
from monailabel.datastore.local import DataModel, LocalDatastore
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag

from lib.http_errors import plain_errors
from lib.medfm.adaptation.data import LabelledImage
from lib.medfm.adaptation.pretrain import UnlabelledImage
from lib.medfm.evaluation import HeldOutCase
from lib.medfm.split import split_ids
from lib.medfm.volume import check_3d_scalar, load_label, read_image

SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_safe_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not SAFE_ID.match(value) or ".." in value:
        raise HTTPException(status_code=400, detail=f"{what} {value!r} is not allowed: use letters, digits, '.', "
                                                    "'_' and '-' only (at most 128), with no '..'")
    return value


def _split(datastore: Datastore, image_ids: Iterable[str],
           only: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(training ids, held-out ids) of `image_ids` by the core's one rule (lib/medfm/split.py)."""
    return split_ids(((i, datastore.get_image_info(i)) for i in image_ids), only)


def heldout_images(datastore: Datastore) -> list[HeldOutCase]:
    """Labelled images the site marked held-out: evaluated on, never trained on."""
    final = DefaultLabelTag.FINAL.value
    _, held = _split(datastore, datastore.get_labeled_images(final))
    return [HeldOutCase(i, datastore.get_image_uri(i), datastore.get_label_uri(i, final)) for i in held]


def training_images(datastore: Datastore, only: list[str] | None = None) -> list[LabelledImage]:
    """Images with a final label, minus those the site marked held-out (never trained on)."""
    final = DefaultLabelTag.FINAL.value
    train, _ = _split(datastore, datastore.get_labeled_images(final), only)
    return [LabelledImage(i, datastore.get_image_uri(i), datastore.get_label_uri(i, final)) for i in train]


def unlabelled_pool(datastore: Datastore, only: list[str] | None = None) -> list[UnlabelledImage]:
    """Every image, labelled or not, that self-supervised pretraining may see: all but the held-out ones (their
    pixels too are kept out, so the guard's evidence comes from images no adapter has seen)."""
    train, _ = _split(datastore, datastore.list_images(), only)
    uris = {i: datastore.get_image_uri(i) for i in train}
    return [UnlabelledImage(i, uri) for i, uri in uris.items() if uri]


class ValidatingDatastore(LocalDatastore):
    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        if image_id:
            check_safe_id(image_id, "image id")
        with plain_errors():
            check_3d_scalar(read_image(image_filename))
        return super().add_image(image_id, image_filename, image_info)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        check_safe_id(image_id, "image id")
        check_safe_id(label_tag, "label tag")
        image_uri = self.get_image_uri(image_id)
        if not image_uri:
            raise HTTPException(status_code=404, detail=f"image '{image_id}' is not in the datastore")
        with plain_errors():
            load_label(label_filename, read_image(image_uri))
        return self._store_label(image_id, label_filename, label_tag, label_info)

    def _store_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        """Where a checked label goes: here, the local folder; a PACS datastore writes final labels to the PACS."""
        return self._save_label_atomically(image_id, label_filename, label_tag, label_info)

    def _save_label_atomically(self, image_id: str, label_filename: str, label_tag: str,
                               label_info: dict[str, Any]) -> str:
        """MONAI Label 0.8.5's `save_label`, except that the file is written beside its final name and renamed onto
        it: its own copy straight onto the name lets a reader (training, a download) or a crash see a torn label."""
        _, ext = self._to_id(os.path.basename(label_filename))
        folder = self._datastore.label_path(label_tag)
        name = self._filename(image_id, ext)
        with FileLock(self._lock_file):
            os.makedirs(folder, exist_ok=True)
            partial = os.path.join(folder, f".partial-{os.getpid()}-{uuid.uuid4().hex}{ext}")
            try:
                shutil.copy(label_filename, partial)
                os.replace(partial, os.path.join(folder, name))
            finally:
                if os.path.exists(partial):
                    os.unlink(partial)
            info = {**(label_info or {}), "ts": int(time.time()), "name": name}
            self._datastore.objects[image_id].labels[label_tag] = DataModel(info=info, ext=ext)
            self._update_datastore_file(lock=False)
        return image_id

    def get_image_uri(self, image_id: str) -> str:
        if not isinstance(image_id, str) or not SAFE_ID.match(image_id) or ".." in image_id:
            return ""
        return super().get_image_uri(image_id)

    def get_label_uri(self, label_id: str, label_tag: str) -> str:
        check_safe_id(label_id, "label id")
        check_safe_id(label_tag, "label tag")
        return super().get_label_uri(label_id, label_tag)

    def get_dataset_archive(self, limit_cases: int | None) -> str:
        if not self.datalist():  # MONAI Label asserts here, which answers 500
            raise HTTPException(status_code=404, detail="there is nothing to download: no image has a final label")
        return super().get_dataset_archive(limit_cases)

    def remove_image(self, image_id: str) -> None:
        check_safe_id(image_id, "image id")
        if not super().get_image_uri(image_id):
            raise HTTPException(status_code=404, detail=f"image '{image_id}' is not in the datastore")
        super().remove_image(image_id)
