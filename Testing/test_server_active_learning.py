"""Active learning over HTTP: strategies on FM scores and embeddings, persisted scores, annotation records."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import requests
import SimpleITK as sitk

from Testing.conftest import RunningServer, copy_datastore

OURS = ("uncertainty", "diversity", "hybrid")
CONF = {"scoring_slices": "3"}


@pytest.fixture(scope="module")
def al_site(sample_datastore, tmp_path_factory):
    """breast1 labelled; brain2 labelled and held out; unlabelled: a near-copy of breast1 and a lung CT crop."""
    base = tmp_path_factory.mktemp("al")
    studies = copy_datastore(sample_datastore, base / "studies", images=("breast1", "brain2"))
    breast = sitk.ReadImage(str(studies / "breast1.nii.gz"))
    noise = sitk.GetImageFromArray(np.random.default_rng(0).normal(0, 1, breast.GetSize()[::-1]).astype(np.int16))
    noise.CopyInformation(breast)
    sitk.WriteImage(breast + noise, str(studies / "breast1_copy.nii.gz"))
    lung = sitk.ReadImage(str(sample_datastore / "lung1.nii.gz"))
    sitk.WriteImage(lung[200:328, 200:328, 20:26], str(studies / "lung_crop.nii.gz"))
    server = RunningServer(studies, base / "models", base / "server.log", conf=CONF)
    requests.put(f"{server.url}/medfm/heldout", json={"images": ["brain2"]}, timeout=60).raise_for_status()
    yield server
    server.stop()


def next_sample(server, strategy: str, **params) -> dict:
    response = requests.post(f"{server.url}/activelearning/{strategy}", json=params, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def score(server) -> dict:
    response = requests.post(f"{server.url}/scoring/medfm_scores", params={"run_sync": "true"}, timeout=900)
    assert response.status_code == 200, response.text
    return response.json()


UNLABELLED = {"breast1_copy", "lung_crop"}


def test_before_scoring_it_says_so_and_still_proposes_an_unlabelled_image(al_site):
    answer = next_sample(al_site, "hybrid", seed=3)
    assert answer["id"] in UNLABELLED and "no scores yet" in answer["reason"]


def test_strategies_choose_unlabelled_images_and_say_why(al_site):
    result = score(al_site)
    assert set(result["scored"]) == UNLABELLED | {"breast1", "brain2"} and not result["failed"]
    for strategy in ("random", "first", *OURS):
        answer = next_sample(al_site, strategy, seed=1)
        assert answer["id"] in UNLABELLED, (strategy, answer)  # never labelled, never held out
    for strategy in OURS:
        answer = next_sample(al_site, strategy, seed=1)
        assert answer["chosen_by"] == strategy and answer["rank"] == 1 and answer["score"] is not None
        assert answer["adapter"] == "base" and strategy in answer["reason"]
    assert score(al_site)["skipped"] and not score(al_site)["scored"]  # nothing changed, nothing rescored


def test_same_seed_same_choice(al_site):
    for strategy in ("random", *OURS):
        picks = {next_sample(al_site, strategy, seed=7)["id"] for _ in range(3)}
        assert len(picks) == 1, strategy


class ListDatastore:
    """Just what a strategy reads of a datastore: unlabelled ids, labelled ids, an image's file."""

    def __init__(self, unlabelled: list[str]):
        self.unlabelled = unlabelled

    def get_unlabeled_images(self, tag):
        return list(self.unlabelled)

    def get_labeled_images(self, tag):
        return []

    def get_image_uri(self, image_id):
        return f"/nowhere/{image_id}.nii.gz"


def test_a_seed_is_parsed_one_way_and_a_bad_one_refused_in_words(tmp_path):
    """Called directly (no server): "5" and 5 are one seed for every strategy; a seed that is not a whole number
    from 0 to 2**32-1 is a 400 in words, never a 500."""
    from fastapi import HTTPException

    from lib.activelearning.medfm_strategy import FMStrategy
    from lib.activelearning.seeded_random import SeededRandom

    service = SimpleNamespace(store=SimpleNamespace(active=lambda: "base"),
                              settings=SimpleNamespace(models_dir=tmp_path))  # no scores: a seeded random choice
    datastore = ListDatastore([f"img{i:02d}" for i in range(40)])
    for strategy in (SeededRandom(), *(FMStrategy(name, service) for name in OURS)):
        assert strategy({"seed": "5"}, datastore)["id"] == strategy({"seed": 5}, datastore)["id"]
        for bad in ("five", -1, 2**32, True):
            with pytest.raises(HTTPException) as refused:
                strategy({"seed": bad}, datastore)
            assert refused.value.status_code == 400
            assert refused.value.detail.startswith("bad active-learning parameter: seed must be a whole number")


def test_diversity_prefers_the_image_unlike_the_labelled_one(al_site):
    answer = next_sample(al_site, "diversity")
    assert answer["id"] == "lung_crop" and answer["runner_up"] == "breast1_copy"


def test_unknown_strategy_is_404(al_site):
    response = requests.post(f"{al_site.url}/activelearning/nope", json={}, timeout=60)
    assert response.status_code == 404 and "unknown strategy" in response.json()["detail"]


def test_scores_survive_a_restart(al_site):
    first = next_sample(al_site, "hybrid", seed=2)
    book = al_site.models / "scores" / "base.json"
    mtime = book.stat().st_mtime_ns
    al_site.stop()
    restarted = RunningServer(al_site.studies, al_site.models, al_site.log.with_name("restart.log"), conf=CONF)
    try:
        again = next_sample(restarted, "hybrid", seed=2)
        assert again["id"] == first["id"] and again["scored_at"] == first["scored_at"]
        assert book.stat().st_mtime_ns == mtime
    finally:
        restarted.stop()
    al_site.__init__(al_site.studies, al_site.models, al_site.log.with_name("again.log"), conf=CONF)


def test_annotation_records_and_an_empty_pool(al_site, tmp_path):
    from monailabel.client import MONAILabelClient

    client = MONAILabelClient(al_site.url, tmpdir=str(tmp_path))
    for image_id, seconds in (("lung_crop", 90), ("breast1_copy", 30)):
        image = sitk.ReadImage(str(al_site.studies / f"{image_id}.nii.gz"))
        label = sitk.Image(image.GetSize(), sitk.sitkUInt8)
        label.CopyInformation(image)
        path = tmp_path / f"{image_id}.nii.gz"
        sitk.WriteImage(label, str(path))
        client.save_label(image_id, str(path), tag="final",
                          params={"annotation_seconds": seconds, "strategy": "diversity", "session": "s1"})
    sessions = requests.get(f"{al_site.url}/medfm/sessions", timeout=60).json()["sessions"]
    session = next(s for s in sessions if s["session"] == "s1")
    assert session["labels"] == 2 and session["annotation_seconds"] == 120
    assert session["labels_per_hour"] == 60.0 and session["strategies"] == {"diversity": 2}
    for strategy in ("random", *OURS):
        assert next_sample(al_site, strategy) == {}  # nothing left to label: an empty answer, not an error
