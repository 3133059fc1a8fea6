"""The one rule for which images train and which are held out, as the server's datastore and a federation site's
folder both apply it (lib/medfm/split.py)."""

from __future__ import annotations

from pathlib import Path

from lib.medfm.federated.site import SiteData, write_site_folder
from lib.medfm.split import split_ids


def test_held_out_images_never_train_and_only_narrows_the_training_side():
    infos = [("c", {}), ("a", {"held_out": True}), ("b", None), ("d", {"held_out": False})]
    assert split_ids(infos) == (["b", "c", "d"], ["a"])
    assert split_ids(infos, only=["a", "c"]) == (["c"], ["a"])  # naming a held-out image does not train on it


def test_a_site_folder_splits_by_the_same_rule(sample_datastore: Path, tmp_path):
    pair = {i: (str(sample_datastore / f"{i}.nii.gz"), str(sample_datastore / "labels" / "final" / f"{i}.nii.gz"))
            for i in ("breast1", "brain1", "brain2")}
    folder = write_site_folder(tmp_path / "site", {"breast1": pair["breast1"], "brain1": pair["brain1"]},
                               {"brain2": pair["brain2"]})
    site = SiteData.read(folder)
    assert [i.image_id for i in site.train] == ["brain1", "breast1"]
    assert [c.image_id for c in site.heldout] == ["brain2"]
    assert site.train[0].label_path.endswith("labels/final/brain1.nii.gz")
    assert Path(site.heldout[0].image_path).is_file()
