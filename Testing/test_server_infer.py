"""Inference over HTTP on the real server with the real LiteMedSAM weights and real sample cases."""

from __future__ import annotations

import time

import numpy as np
import SimpleITK as sitk

from Testing.helpers import dice, label_roi, read_ijk

# LiteMedSAM on lung2's lesion from its 3D box, propagated slice to slice: measured 0.925 on the 2-core dev CPU
# (slice-wise with the exact per-slice box it reaches 0.93, the FACTS zero-shot figure). 0.85 leaves room for
# thread-count and BLAS differences while still failing if geometry, windowing or propagation breaks.
LUNG2_MIN_DICE = 0.85
# brain1's lesion from its 3D box: 0.80 on the 2-core dev CPU (0.30 before the roi became a candidate on every slice).
BRAIN1_MIN_DICE = 0.7


def test_info_lists_tasks(server):
    info = server.info()
    assert {"medsam_interactive", "medsam_auto"} <= set(info["models"])
    assert info["models"]["medsam_interactive"]["type"] == "deepgrow"
    assert info["models"]["medsam_auto"]["type"] == "segmentation"
    assert "medsam_adapt" in info["trainers"]
    assert info["fm"]["name"] == "litemedsam" and len(info["fm"]["sha256"]) == 64


def test_interactive_roi_matches_label_on_the_case_grid(client, server):
    truth, truth_image = read_ijk(server.studies / "labels" / "final" / "lung2.nii.gz")
    roi = label_roi(truth)
    result, params = client.infer("medsam_interactive", "lung2", {"roi": roi})
    pred, pred_image = read_ijk(result)
    image = sitk.ReadImage(str(server.studies / "lung2.nii.gz"))
    assert pred_image.GetSize() == image.GetSize()
    assert np.allclose(pred_image.GetSpacing(), image.GetSpacing())
    assert np.allclose(pred_image.GetOrigin(), image.GetOrigin())
    assert np.allclose(pred_image.GetDirection(), image.GetDirection())
    score = dice(pred > 0, truth > 0)
    assert score >= LUNG2_MIN_DICE, f"lung2 Dice {score:.3f}"
    assert not pred[:, :, : roi[4]].any() and not pred[:, :, roi[5] + 1:].any()  # nothing outside the roi's slices
    assert params["fm"]["name"] == "litemedsam" and params["adapter"] == "base"
    assert params["timing"]["cache_misses"] > 0
    assert set(params["timing"]) >= {"embedding_s", "decode_s", "total_s", "cache_hits", "cache_misses"}

    # A second prompt on the same volume: the encoder must not run again.
    centre = [(roi[0] + roi[2]) // 2, (roi[1] + roi[3]) // 2, (roi[4] + roi[5]) // 2]
    _, again = client.infer("medsam_interactive", "lung2", {"roi": roi, "foreground": [centre]})
    assert again["timing"]["cache_misses"] == 0 and again["timing"]["cache_hits"] > 0


def test_interactive_on_oblique_flipped_case_keeps_its_direction(client, server):
    """brain1 is stored with a flipped y axis: the result must carry the same direction and land on the lesion."""
    truth, _ = read_ijk(server.studies / "labels" / "final" / "brain1.nii.gz")
    areas = [(truth[:, :, k] > 0).sum() for k in range(truth.shape[2])]
    k = int(np.argmax(areas))
    roi = label_roi(truth[:, :, k:k + 1])
    roi[4] = roi[5] = k
    result, _ = client.infer("medsam_interactive", "brain1", {"roi": roi})
    pred, pred_image = read_ijk(result)
    assert np.allclose(pred_image.GetDirection(), sitk.ReadImage(str(server.studies / "brain1.nii.gz")).GetDirection())
    assert dice(pred[:, :, k] > 0, truth[:, :, k] > 0) > 0.7  # measured 0.87 for this slice's own box
    assert pred.sum() == pred[:, :, k].sum()


def test_a_3d_box_follows_a_lesion_that_moves_between_slices(client, server):
    """brain1's lesion shifts by up to 40 pixels between its 6.5 mm slices: the box of the previous slice's mask
    alone led the answer off the lesion (3D Dice 0.30); the roi as a second candidate on every slice keeps it on."""
    truth, _ = read_ijk(server.studies / "labels" / "final" / "brain1.nii.gz")
    roi = label_roi(truth)
    result, _ = client.infer("medsam_interactive", "brain1", {"roi": roi})
    pred, _ = read_ijk(result)
    score = dice(pred > 0, truth > 0)
    assert score >= BRAIN1_MIN_DICE, f"brain1 Dice {score:.3f}"
    every_slice = [dice(pred[:, :, k] > 0, truth[:, :, k] > 0) for k in range(roi[4], roi[5] + 1)]
    assert min(every_slice) > 0.2, f"a slice of the lesion was missed: {every_slice}"  # was 0.00 on slices 16-17


def test_a_click_alone_segments_the_lesion_in_3d(client, server):
    """No roi: boxes of a few sizes are tried around the click and the result is followed through the slices."""
    truth, _ = read_ijk(server.studies / "labels" / "final" / "lung2.nii.gz")
    k = int(np.argmax((truth > 0).sum((0, 1))))
    i, j = np.nonzero(truth[:, :, k])
    nearest = int(np.argmin((i - i.mean()) ** 2 + (j - j.mean()) ** 2))
    click = [int(i[nearest]), int(j[nearest]), k]
    result, params = client.infer("medsam_interactive", "lung2", {"foreground": [click]})
    pred, _ = read_ijk(result)
    assert pred[tuple(click)] == 1
    assert len(params["slices"]) > 1
    assert dice(pred > 0, truth > 0) >= 0.8  # measured 0.919 on the dev CPU

    flat, params = client.infer("medsam_interactive", "lung2", {"foreground": [click], "max_propagation": 0})
    flat, _ = read_ijk(flat)
    assert params["slices"] == [k] and flat.sum() == flat[:, :, k].sum() > 0  # the clicked slice alone
    assert np.array_equal(flat[:, :, k], pred[:, :, k])


def test_slices_between_two_clicked_slices_are_filled(client, server):
    """Clicks three slices apart: the structure is followed from each clicked slice towards the other, so no slice
    between them is left empty (it was, before 2026-11-28: propagation went outward from the outermost ones only)."""
    truth, _ = read_ijk(server.studies / "labels" / "final" / "lung2.nii.gz")
    ks = [k for k in range(truth.shape[2]) if truth[:, :, k].any()]
    middle = ks[len(ks) // 2]
    clicks = []
    for k in (middle - 2, middle + 2):
        i, j = np.nonzero(truth[:, :, k])
        nearest = int(np.argmin((i - i.mean()) ** 2 + (j - j.mean()) ** 2))
        clicks.append([int(i[nearest]), int(j[nearest]), k])
    result, params = client.infer("medsam_interactive", "lung2", {"foreground": clicks, "max_propagation": 0})
    pred, _ = read_ijk(result)
    assert params["slices"] == list(range(middle - 2, middle + 3))
    assert all(pred[:, :, k].any() for k in params["slices"])


def test_uploaded_file_is_segmented_without_entering_the_datastore(client, server, tmp_path):
    before = client.datastore()["objects"].keys() if "objects" in client.datastore() else None
    result, params = client.infer("medsam_interactive", "", {"roi": [21, 29, 64, 75, 9, 9]},
                                  file=str(server.studies / "breast1.nii.gz"))
    pred, image = read_ijk(result)
    assert image.GetSize() == (45, 120, 21) and pred[:, :, 9].any()
    if before is not None:
        assert client.datastore()["objects"].keys() == before


def test_server_answers_while_an_inference_runs(client, server):
    """MONAI Label's infer endpoint blocks its event loop; ours runs in a worker thread so /info/ still answers.

    Ordering, not timing: /info/ must come back while a cold 10-slice inference on lung1 is still running.
    """
    import threading

    truth, _ = read_ijk(server.studies / "labels" / "final" / "lung1.nii.gz")
    roi = label_roi(truth)
    roi[5] = min(roi[4] + 9, truth.shape[2] - 1)
    done: dict = {}
    worker = threading.Thread(target=lambda: done.update(result=client.infer("medsam_interactive", "lung1",
                                                                              {"roi": roi})))
    worker.start()
    time.sleep(2.0)  # the request is in; ten cold slices take well over 10 s on this class of CPU
    assert worker.is_alive(), "the inference finished too fast for this check to mean anything"
    info = server.info()
    still_running = worker.is_alive()
    worker.join()
    assert still_running and "medsam_interactive" in info["models"]
    assert done["result"][1]["timing"]["cache_misses"] == roi[5] - roi[4] + 1
