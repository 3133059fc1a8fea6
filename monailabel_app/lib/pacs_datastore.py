"""A PACS over DICOMweb as the datastore: series are the images, DICOM SEG series are the final labels.

MONAI Label 0.8.5's own DICOMweb datastore cannot serve this app offline or safely: it downloads dcmqi from GitHub at
start-up to write SEG, looks up a label's series by the image's id, and skips the checks our local datastore makes.
This one keeps MONAI Label's local cache layout (so every route and task works unchanged) and adds:
- images are the PACS's image series (QIDO-RS), fetched once (WADO-RS) into the cache and read as one volume with
  the slice order `dicom_seg` defines;
- a final label is the newest SEG series that references the image series; it is read with highdicom onto the
  image's grid, segments matched to the site's labels by name;
- submitting a final label checks it as the local datastore does, writes it as a SEG of the same study and stores it
  in the PACS (STOW-RS) before anything changes locally; if the PACS refuses, nothing changes;
- images come from the PACS only: uploading or deleting one here is refused in words.
Held-out marks and non-final labels live in the local cache, kept with the models so they survive restarts.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
import SimpleITK as sitk
from dicomweb_client import DICOMwebClient
from fastapi import HTTPException
from filelock import FileLock
from monailabel.interfaces.datastore import DefaultLabelTag
from pydicom.dataset import Dataset

from lib.datastore import SAFE_ID, ValidatingDatastore, check_safe_id
from lib.http_errors import plain_errors
from lib.medfm.dicom_seg import label_to_seg, seg_to_label, series_to_volume
from lib.medfm.split import HELD_OUT
from lib.medfm.volume import read_image

logger = logging.getLogger(__name__)

FINAL = DefaultLabelTag.FINAL.value
NOT_IMAGES = {"SEG", "SR", "RTSTRUCT", "RTPLAN", "RTDOSE", "PR", "KO", "REG", "DOC", "ECG", "PLAN"}
LIST_SECONDS = 10.0  # how long a PACS listing is reused; any write through this server refreshes it at once


@contextmanager
def pacs_errors(url: str) -> Iterator[None]:
    """A PACS that is down or refuses answers 502 in words, never a bare 500."""
    try:
        yield
    except requests.HTTPError as err:
        status = err.response.status_code if err.response is not None else "?"
        raise HTTPException(status_code=502, detail=f"the PACS at {url} answered {status}: {err}") from err
    except requests.RequestException as err:
        raise HTTPException(status_code=502, detail=f"the PACS at {url} did not answer: {err}") from err


class PACSDatastore(ValidatingDatastore):
    def __init__(self, client: DICOMwebClient, cache_path: str, labels: dict[str, int],
                 search_filter: dict[str, Any] | None = None):
        self._client = client
        # dicomweb_client retries a refused connection 5 times, 1+2+4+8+16 s apart: a PACS that is down would hold
        # every request for half a minute. Three tries within about a second still ride out a brief hiccup.
        client.set_http_retry_params(max_attempts=3, wait_exponential_multiplier=200)
        self._url = client.base_url
        self._labels = dict(labels)
        self._search_filter = dict(search_filter or {})
        self._listing: dict[str, tuple[float, Any]] = {}
        self._seg_refs: dict[str, tuple[str, str, str]] = {}  # SEG series -> (image series, study, created)
        self._mutex = threading.Lock()
        super().__init__(cache_path, extensions=("*.nii.gz",), auto_reload=False)
        self._dicom_dir = Path(cache_path) / ".dicom"

    def name(self) -> str:
        return self._url

    # ---- what the PACS holds -----------------------------------------------------------------------------
    def _cached(self, key: str, fetch) -> Any:
        with self._mutex:
            hit = self._listing.get(key)
            if hit and time.monotonic() - hit[0] < LIST_SECONDS:
                return hit[1]
        with pacs_errors(self._url):
            value = fetch()
        with self._mutex:
            self._listing[key] = (time.monotonic(), value)
        return value

    def refresh(self) -> None:
        with self._mutex:
            self._listing.clear()
        super().refresh()

    def _series(self) -> dict[str, Dataset]:
        """Image series in the PACS (after the site's search filter) by SeriesInstanceUID."""
        def fetch():
            found = {}
            for item in self._client.search_for_series(search_filters=self._search_filter or None):
                ds = Dataset.from_json(item)
                uid = str(ds.get("SeriesInstanceUID", ""))
                if SAFE_ID.match(uid) and str(ds.get("Modality", "")).upper() not in NOT_IMAGES:
                    found[uid] = ds
            return found
        return self._cached("series", fetch)

    def _segs_by_image(self) -> dict[str, list[tuple[str, str, str]]]:
        """For each image series, the SEG series that reference it as (created, SEG uid, study), oldest first."""
        def fetch():
            for item in self._client.search_for_series(search_filters={"Modality": "SEG"}):
                ds = Dataset.from_json(item)
                seg_uid, study = str(ds.SeriesInstanceUID), str(ds.StudyInstanceUID)
                if seg_uid in self._seg_refs:
                    continue  # a SEG never changes: its reference is read once
                meta = Dataset.from_json(self._client.retrieve_series_metadata(study, seg_uid)[0])
                refs = meta.get("ReferencedSeriesSequence") or []
                if not refs:
                    logger.warning("SEG %s references no series; ignored", seg_uid)
                    continue
                created = f"{meta.get('ContentDate', '')}{meta.get('ContentTime', '')}"
                self._seg_refs[seg_uid] = (str(refs[0].SeriesInstanceUID), study, created)
            by_image: dict[str, list[tuple[str, str, str]]] = {}
            for seg_uid, (image, study, created) in self._seg_refs.items():
                by_image.setdefault(image, []).append((created, seg_uid, study))
            return {image: sorted(segs) for image, segs in by_image.items()}
        return self._cached("segs", fetch)

    def list_images(self) -> list[str]:
        return sorted(self._series())

    def get_labeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        images = set(self._series())
        return sorted(image for image in self._segs_by_image() if image in images)

    def get_unlabeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        return sorted(set(self.list_images()) - set(self.get_labeled_images()))

    # ---- images: fetched once, read with the slice order SEG writing relies on ----------------------------
    def get_image_uri(self, image_id: str) -> str:
        if not isinstance(image_id, str) or not SAFE_ID.match(image_id) or image_id not in self._series():
            return ""
        path = Path(self._datastore.image_path()) / f"{image_id}.nii.gz"
        if path.exists() and image_id in self._datastore.objects:
            return str(path)
        with FileLock(str(self._dicom_dir.parent / f".fetch-{image_id}.lock")):
            if not (path.exists() and image_id in self._datastore.objects):
                self._fetch_image(image_id, path)
        return str(path)

    def _fetch_image(self, image_id: str, path: Path) -> None:
        series = self._series()[image_id]
        folder = self._dicom_dir / image_id
        if not folder.exists():
            self._dicom_dir.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=self._dicom_dir))
            try:
                with pacs_errors(self._url):
                    for n, ds in enumerate(self._client.retrieve_series(str(series.StudyInstanceUID), image_id)):
                        ds.save_as(str(staging / f"{n:05d}.dcm"))
                staging.rename(folder)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        with plain_errors():
            volume, _ = series_to_volume(folder)
        with tempfile.TemporaryDirectory(dir=self._dicom_dir) as tmp:
            nifti = Path(tmp) / f"{image_id}.nii.gz"
            sitk.WriteImage(volume, str(nifti), useCompression=True)
            info = {key: str(series.get(key, "")) for key in ("StudyInstanceUID", "PatientID", "Modality",
                                                              "SeriesDescription", "SeriesNumber")}
            held = self._datastore.objects.get(image_id)
            info.update({k: v for k, v in (held.image.info if held else {}).items() if k == HELD_OUT})
            super(ValidatingDatastore, self).add_image(image_id, str(nifti), {**info, "source": self._url})

    def _sources(self, image_id: str) -> list[Dataset]:
        self.get_image_uri(image_id)
        return series_to_volume(self._dicom_dir / image_id)[1]

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> None:
        if not self.get_image_uri(image_id):
            raise HTTPException(status_code=404, detail=f"series '{image_id}' is not in the PACS")
        super().update_image_info(image_id, info)

    def get_image_info(self, image_id: str) -> dict[str, Any]:
        info = super().get_image_info(image_id)
        series = self._series().get(image_id) if SAFE_ID.match(str(image_id)) else None
        if series is not None and not info:
            info = {key: str(series.get(key, "")) for key in ("StudyInstanceUID", "PatientID", "Modality")}
        return info

    # ---- final labels: SEG series in the PACS ------------------------------------------------------------
    def get_label_uri(self, label_id: str, label_tag: str) -> str:
        check_safe_id(label_id, "label id")
        check_safe_id(label_tag, "label tag")
        if label_tag != FINAL:
            return super().get_label_uri(label_id, label_tag)
        segs = self._segs_by_image().get(label_id)
        if not segs or not self.get_image_uri(label_id):
            return ""
        _, seg_uid, study = segs[-1]
        local = super().get_label_uri(label_id, FINAL)
        if local and os.path.exists(local) and self.get_label_info(label_id, FINAL).get("SeriesInstanceUID") == seg_uid:
            return local
        with pacs_errors(self._url):
            seg = self._client.retrieve_series(study, seg_uid)[0]
        with plain_errors():
            like = read_image(self.get_image_uri(label_id))
            label = seg_to_label(seg, self._sources(label_id), self._labels, like)
        with tempfile.TemporaryDirectory(dir=self._datastore_path) as tmp:
            path = Path(tmp) / f"{label_id}.nii.gz"
            sitk.WriteImage(label, str(path), useCompression=True)
            self._save_label_atomically(label_id, str(path), FINAL, {"SeriesInstanceUID": seg_uid, "source": "PACS"})
        return super().get_label_uri(label_id, FINAL)

    def _store_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        """A final label goes to the PACS as a SEG first; only once the PACS has it does the cache change."""
        if label_tag != FINAL:
            return self._save_label_atomically(image_id, label_filename, label_tag, label_info)
        names = {value: name for name, value in self._labels.items()}
        with plain_errors():
            seg = label_to_seg(read_image(label_filename), self._sources(image_id), names)
        with pacs_errors(self._url):
            self._client.store_instances([seg])
        with self._mutex:
            self._listing.pop("segs", None)
        info = {**(label_info or {}), "SeriesInstanceUID": str(seg.SeriesInstanceUID),
                "StudyInstanceUID": str(seg.StudyInstanceUID)}
        return self._save_label_atomically(image_id, label_filename, label_tag, info)

    def remove_label(self, label_id: str, label_tag: str) -> None:
        if label_tag == FINAL:
            raise HTTPException(status_code=405, detail="final labels are DICOM SEG series in the PACS: delete the "
                                                        "SEG series there; this server never deletes from a PACS")
        super().remove_label(label_id, label_tag)

    # ---- images come from the PACS only -----------------------------------------------------------------
    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        raise HTTPException(status_code=405, detail=f"images come from the PACS at {self._url}: send the series "
                                                    "there (C-STORE or STOW-RS); this server does not upload images")

    def remove_image(self, image_id: str) -> None:
        raise HTTPException(status_code=405, detail="images live in the PACS; this server never deletes from a PACS")

    def datalist(self, full_path: bool = True) -> list[dict[str, Any]]:
        items = []
        for image_id in self.get_labeled_images():
            image, label = self.get_image_uri(image_id), self.get_label_uri(image_id, FINAL)
            if image and label:
                items.append({"image": image, "label": label})
        return items


def open_pacs(url: str, models_dir: str, labels: dict[str, int]) -> PACSDatastore:
    """The PACS datastore for `--studies http(s)://.../dicom-web`, with MONAI Label's own DICOMweb settings:
    user and password, QIDO/WADO/STOW prefixes, cache folder (default: beside the models, so held-out marks
    survive restarts) and search filter (serve.py makes it empty unless the site sets one)."""
    from dicomweb_client.session_utils import create_session_from_user_pass
    from monailabel.config import settings
    from monailabel.datastore.dicom import DICOMwebClientX
    from monailabel.utils.others.generic import md5_digest

    user = settings.MONAI_LABEL_DATASTORE_USERNAME or settings.MONAI_LABEL_DICOMWEB_USERNAME
    password = settings.MONAI_LABEL_DATASTORE_PASSWORD or settings.MONAI_LABEL_DICOMWEB_PASSWORD
    session = create_session_from_user_pass(user, password) if user and password else None
    client = DICOMwebClientX(url=url, session=session, qido_url_prefix=settings.MONAI_LABEL_QIDO_PREFIX,
                             wado_url_prefix=settings.MONAI_LABEL_WADO_PREFIX,
                             stow_url_prefix=settings.MONAI_LABEL_STOW_PREFIX)
    cache = (settings.MONAI_LABEL_DATASTORE_CACHE_PATH or settings.MONAI_LABEL_DICOMWEB_CACHE_PATH or "").strip()
    cache = cache or os.path.join(models_dir, "pacs-cache")
    return PACSDatastore(client, os.path.join(cache, md5_digest(url)[:16]), labels,
                         settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER)
