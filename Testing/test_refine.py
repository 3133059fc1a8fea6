"""Correction clicks on a previous answer (lib/medfm/refine.py, interaction.py), without a server: a stand-in
decoder returns fixed candidate masks, so what each click may and may not change is checked exactly."""

from __future__ import annotations

import numpy as np
import pytest

from lib.medfm.errors import InputError
from lib.medfm.interaction import InteractionStore, Request, State, session_name
from lib.medfm.prompts import InferOptions
from lib.medfm.refine import edit_slice
from lib.medfm.segmenter import INTENSITY_TOLERANCE, Looks


def square(shape, r0, r1, c0, c1) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[r0:r1, c0:c1] = True
    return mask


def decoder_returning(*masks_and_quality):
    """A decoder that answers every box with the same candidates (mask, quality), as many as boxes asked."""
    calls = []

    def decode(boxes, with_clicks):
        calls.append((list(boxes), with_clicks))
        return [masks_and_quality[n % len(masks_and_quality)] for n in range(len(boxes))]

    decode.calls = calls
    return decode


def test_background_click_removes_the_false_part_and_keeps_the_rest():
    previous = square((40, 40), 10, 20, 10, 30)  # a lesion (columns 10-19) with a false tail (columns 20-29)
    lesion = square((40, 40), 10, 20, 10, 20)
    click = (25.0, 15.0, 0)  # x = column 25, y = row 15: on the tail
    edit = edit_slice(previous, [click], click, decoder_returning((lesion, 0.9)))
    assert not edit.mask[15, 25] and edit.mask.any()
    assert np.array_equal(edit.mask, lesion)
    assert not (edit.mask & ~previous).any()  # a background click never adds


def test_a_background_click_at_the_heart_of_a_blob_removes_all_of_it():
    previous = square((40, 40), 10, 20, 10, 20) | square((40, 40), 30, 34, 30, 34)  # a blob, and another away
    click = (15.0, 15.0, 0)  # its centre: the radiologist says the blob should not be there at all
    edit = edit_slice(previous, [click], click, decoder_returning((square((40, 40), 10, 20, 10, 14), 0.9)))
    assert edit.how == "centre"
    assert not edit.mask[10:20, 10:20].any() and edit.mask[30:34, 30:34].all()  # that blob, and only it


def test_a_blob_too_thin_to_have_a_heart_is_trimmed_not_taken_whole():
    """breast1, clicks only: a 49-pixel answer on a slice of a 5 mm lesion, 32 pixels of it lesion, went whole."""
    previous = square((40, 40), 10, 15, 10, 20)  # 5 x 10 pixels: its deepest pixel is 3 from the border
    thin = square((40, 40), 10, 14, 10, 20)  # 4 x 10: 2 from the border
    kept = square((40, 40), 10, 14, 10, 15)  # the decoder's trim: the half left of the click
    click = (15.0, 12.0, 0)
    assert edit_slice(previous, [click], click, decoder_returning((kept, 0.9))).how == "centre"
    edit = edit_slice(thin, [click], click, decoder_returning((kept, 0.9)))
    assert edit.how != "centre" and np.array_equal(edit.mask, kept)


def test_inside_the_users_3d_box_a_centre_click_never_empties_the_slice():
    """The roi says the structure is on every slice of it (a kidney's slice was emptied by one click before)."""
    previous = square((40, 40), 10, 20, 10, 20)
    click = (15.0, 15.0, 0)
    edit = edit_slice(previous, [click], click, decoder_returning((square((40, 40), 10, 20, 10, 14), 0.9)),
                      in_roi=True)
    assert edit.how != "centre" and edit.mask.any() and not edit.mask[15, 15]


def test_inside_the_users_3d_box_a_centre_click_never_takes_the_slices_main_blob():
    """brain1: a centre click removed a 786-pixel blob (lesion included) and kept a 73-pixel stray beside it."""
    main_blob, stray = square((40, 40), 5, 25, 5, 25), square((40, 40), 32, 35, 32, 35)
    click = (15.0, 15.0, 0)
    trimmed = square((40, 40), 5, 25, 5, 12)
    edit = edit_slice(main_blob | stray, [click], click, decoder_returning((trimmed | stray, 0.9)), in_roi=True)
    assert edit.how != "centre" and edit.mask[5:25, 5:12].all() and edit.mask[32:35, 32:35].all()
    assert not edit.mask[15, 15]
    outside = edit_slice(main_blob | stray, [click], click, decoder_returning((trimmed | stray, 0.9)))
    assert outside.how == "centre"  # with no roi the click says the blob should not be there at all


def test_a_centre_click_on_a_blob_holding_a_foreground_click_only_trims_it():
    previous = square((40, 40), 10, 20, 10, 20)
    clicks = [(11.0, 11.0, 1), (15.0, 15.0, 0)]
    edit = edit_slice(previous, clicks, clicks[-1], decoder_returning((square((40, 40), 10, 14, 10, 14), 0.9)))
    assert edit.how != "centre" and edit.mask[11, 11] and not edit.mask[15, 15]


def test_background_click_keeps_every_foreground_click():
    previous = square((40, 40), 10, 20, 10, 30)
    empty = np.zeros((40, 40), dtype=bool)
    clicks = [(12.0, 12.0, 1), (25.0, 15.0, 0)]
    edit = edit_slice(previous, clicks, clicks[-1], decoder_returning((empty, 0.9)))
    assert edit.mask[12, 12] and not edit.mask[15, 25]


def test_foreground_click_adds_the_part_holding_it_and_removes_nothing():
    previous = square((40, 40), 10, 20, 10, 20)
    candidate = square((40, 40), 10, 20, 10, 28) | square((40, 40), 0, 1, 0, 1)  # plus a stray pixel
    click = (25.0, 15.0, 1)
    edit = edit_slice(previous, [click], click, decoder_returning((candidate, 0.8)), click_boxes=[(20, 10, 30, 20)])
    assert edit.mask[15, 25] and (edit.mask & previous).sum() == previous.sum()
    assert not edit.mask[0, 0]  # only the part that holds the click is added


def test_the_previous_mask_goes_back_as_the_mask_prompt():
    previous = square((40, 40), 10, 20, 10, 20)
    decode = decoder_returning((square((40, 40), 10, 20, 10, 26), 0.8))
    edit_slice(previous, [(24.0, 15.0, 1)], (24.0, 15.0, 1), decode)
    assert any(with_clicks for _, with_clicks in decode.calls)  # the box+clicks+mask candidate was decoded


def test_a_click_no_candidate_agrees_with_still_changes_its_spot():
    previous = square((40, 40), 10, 20, 10, 20)
    empty = np.zeros((40, 40), dtype=bool)
    edit = edit_slice(previous, [(30.0, 30.0, 1)], (30.0, 30.0, 1), decoder_returning((empty, 0.9)))
    assert edit.how == "disk" and edit.mask[30, 30] and (edit.mask & previous).sum() == previous.sum()


def test_a_foreground_click_no_decoder_answer_holds_grows_over_what_looks_like_it():
    """brain2's darker half of the lesion: no box makes LiteMedSAM take it in; the click grows over it instead."""
    image = np.full((40, 40), 0.1)
    image[10:20, 10:20] = 0.7  # the part the decoder found
    image[10:20, 20:26] = 0.45  # the darker part it left out
    previous = square((40, 40), 10, 20, 10, 20)
    empty = np.zeros((40, 40), dtype=bool)
    click = (23.0, 15.0, 1)
    edit = edit_slice(previous, [click], click, decoder_returning((empty, 0.9)), image=image)
    assert edit.how == "grown"
    assert np.array_equal(edit.mask, square((40, 40), 10, 20, 10, 26))  # the darker part, and not the background
    bounded = edit_slice(previous, [click], click, decoder_returning((empty, 0.9)), image=image,
                         bounds=(10.0, 10.0, 24.0, 20.0))
    assert np.array_equal(bounded.mask, square((40, 40), 10, 20, 10, 24))  # never past the user's box


def test_a_decoder_addition_of_other_tissue_is_refused_and_one_of_the_structures_own_is_taken():
    """brain1_crop: a 60 mm click box added 2,235 pixels (176 of them lesion), spread 0.18 against the answer's 0.08,
    and Dice fell 0.85 -> 0.52; an organ's sliver growing into more of the same organ stays uniform and is taken."""
    image = np.full((40, 40), 0.5)
    image[10:30, 26:36] = 0.1  # other tissue beside the structure
    previous = square((40, 40), 10, 30, 10, 20)
    click = (22.0, 20.0, 1)
    leak = square((40, 40), 10, 30, 10, 36)  # the structure's miss (columns 20-25) and the tissue beside it
    edit = edit_slice(previous, [click], click, decoder_returning((leak, 0.9)), image=image)
    assert edit.how != "box 0" and not edit.mask[:, 26:].any() and edit.mask[20, 22]
    uniform = square((40, 40), 10, 30, 10, 26)
    taken = edit_slice(previous, [click], click, decoder_returning((uniform, 0.9)), image=image)
    assert taken.how == "box 0" and np.array_equal(taken.mask, uniform)
    # brain2_crop after adaptation: 785 pixels of mean 0.28 offered to an 86-pixel answer of 0.41 +- 0.10.
    image[10:30, 20:40] = 0.35  # uniform, but darker than the answer by more than its spread (at least 0.1)
    darker = square((40, 40), 10, 30, 10, 40)  # adds 400 pixels to 200
    refused = edit_slice(previous, [click], click, decoder_returning((darker, 0.9)), image=image)
    assert refused.how != "box 0" and not refused.mask[:, 30:].any()


def test_a_click_on_background_alike_to_it_is_a_disk_not_a_flood():
    """A region larger than the answer has leaked into the background: the click falls back to its disk."""
    image = np.full((40, 40), 0.1)
    previous = square((40, 40), 18, 22, 18, 22)
    click = (30.0, 20.0, 1)
    edit = edit_slice(previous, [click], click, decoder_returning((np.zeros((40, 40), dtype=bool), 0.9)),
                      image=image)
    assert edit.how == "disk" and edit.mask.sum() < previous.sum() + 20


def test_a_background_click_removes_no_more_than_the_part_that_looks_like_it():
    """breast1's rim click: the decoder's cut took 19 lesion pixels with the 2 wrong ones; what looks like the
    click (the rim tissue) is all that goes, when it is the smaller removal."""
    image = np.full((40, 40), 0.7)
    image[10:20, 24:28] = 0.2  # a rim of other tissue the answer took in
    previous = square((40, 40), 10, 20, 10, 28)
    cut = square((40, 40), 10, 20, 10, 18)  # the decoder's candidate keeps less than the lesion
    click = (26.0, 15.0, 0)
    edit = edit_slice(previous, [click], click, decoder_returning((cut, 0.9)), image=image)
    assert edit.how == "alike" and np.array_equal(edit.mask, square((40, 40), 10, 20, 10, 24))
    wide = edit_slice(previous, [click], click, decoder_returning((square((40, 40), 10, 20, 10, 25), 0.9)),
                      image=image)
    assert wide.how != "alike" and np.array_equal(wide.mask, square((40, 40), 10, 20, 10, 25))  # the smaller cut


def test_a_background_click_on_a_darker_rim_removes_all_of_it_not_only_what_matches_the_click_exactly():
    """lung1's rim (0.29-0.31 around a 0.47 nodule) and brain1's dark over-segmentation vary more than the
    tolerance: what goes is the answer's tissue as dark as the click or darker, connected to it; the lesion stays."""
    image = np.full((40, 40), 0.7)
    image[10:20, 22:28] = np.linspace(0.35, 0.15, 6)  # a rim darker than the lesion, darker outwards
    previous = square((40, 40), 10, 20, 10, 28)
    click = (23.0, 15.0, 0)  # on the rim's inner, lighter part (0.31 with its neighbours)
    nothing = decoder_returning((previous, 0.9))  # no decoder cut removes anything
    edit = edit_slice(previous, [click], click, nothing, in_roi=True, image=image)
    assert edit.how == "alike" and np.array_equal(edit.mask, square((40, 40), 10, 20, 10, 22))
    lighter = edit_slice(previous, [(11.0, 15.0, 0)], (11.0, 15.0, 0), nothing, in_roi=True, image=image)
    assert not (lighter.mask ^ previous)[10:20, 22:28].any()  # a click on the lesion side never takes the rim


def test_a_foreground_click_on_a_varied_bright_miss_grows_over_what_stands_out_from_the_background():
    """breast1's bright lesion: its missed part varies more than the tolerance (0.79 +- 0.11), so "like the click"
    grew nothing and each click added a 2-pixel disk; what is at least as bright as the click, against the tissue
    around the answer, is the miss."""
    image = np.full((40, 40), 0.3)  # the tissue around
    image[10:20, 10:20] = 0.7  # the part the decoder found
    image[10:20, 20:26] = np.tile([0.8, 0.9], (10, 3))  # the varied part it missed
    previous = square((40, 40), 10, 20, 10, 20)
    empty = np.zeros((40, 40), dtype=bool)
    click = (23.0, 15.0, 1)  # 0.9, 0.83 with its neighbours: the click itself is not "like the click"
    edit = edit_slice(previous, [click], click, decoder_returning((empty, 0.9)), image=image)
    assert edit.how == "grown" and np.array_equal(edit.mask, square((40, 40), 10, 20, 10, 26))


def test_one_background_click_trims_and_never_cuts_away_most_of_the_slice():
    """A kidney slice lost 219 of its 287 pixels to one click on a 74-pixel over-segmentation, and the walk carried
    the cut over 16 slices (Dice 0.82 -> 0.50): a cut of more than half the slice is refused."""
    previous = square((40, 40), 10, 30, 10, 30)  # 400 pixels
    click = (27.0, 20.0, 0)  # near the right rim
    most = square((40, 40), 10, 30, 10, 16)  # the decoder's one-sided cut keeps 120 of 400
    trim = square((40, 40), 10, 30, 10, 26)
    edit = edit_slice(previous, [click], click, decoder_returning((most, 0.95), (trim, 0.5)), in_roi=True)
    assert np.array_equal(edit.mask, trim)
    # Without an roi too: clicks alone on brain1, one cut took the lesion's 226 pixels of a slice and kept 351
    # wrong ones.
    free = edit_slice(previous, [click], click, decoder_returning((most, 0.95), (trim, 0.5)))
    assert np.array_equal(free.mask, trim)


def test_when_every_decoder_cut_takes_most_of_the_slice_the_part_that_looks_like_the_click_goes():
    """brain1's slice 14: 845 pixels answered for 247 of lesion, every cut the decoder offered took more than half
    the slice, and each click took a 13-pixel disk. The false part that looks like the click is a trim: it goes
    (only when larger than the disk and no more than half the slice)."""
    image = np.full((40, 40), 0.7)
    image[10:30, 22:30] = 0.3  # the false part the answer took in: 160 of 400 pixels, unlike the lesion
    previous = square((40, 40), 10, 30, 10, 30)
    click = (26.0, 20.0, 0)
    most = square((40, 40), 10, 30, 10, 14)  # the decoder's only cut keeps 80 of 400
    edit = edit_slice(previous, [click], click, decoder_returning((most, 0.95)), in_roi=True, image=image)
    assert edit.how == "alike" and np.array_equal(edit.mask, square((40, 40), 10, 30, 10, 22))
    image[10:30, 16:30] = 0.3  # alike is now 280 of 400 pixels: most of the slice, so the disk it is
    disk = edit_slice(previous, [click], click, decoder_returning((most, 0.95)), in_roi=True, image=image)
    assert disk.how == "disk" and previous.sum() - disk.mask.sum() == 13


def test_a_fallback_disk_never_undoes_an_earlier_click_of_the_slice():
    """brain2: a background click one pixel from a foreground one took it with its disk, and the annotator had to
    click the same pixel again."""
    previous = square((40, 40), 10, 30, 10, 30)
    fg, bg = (20.0, 20.0, 1), (21.0, 20.0, 0)
    nothing = decoder_returning((previous, 0.9))  # no candidate removes anything
    edit = edit_slice(previous, [fg, bg], bg, nothing)
    assert edit.how == "disk" and edit.mask[20, 20] and not edit.mask[20, 21]
    empty = np.zeros((40, 40), dtype=bool)
    added = edit_slice(empty, [bg, (22.0, 20.0, 1)], (22.0, 20.0, 1), decoder_returning((empty, 0.9)))
    assert added.how == "disk" and added.mask[20, 22] and not added.mask[20, 21]


def request(fg=(), bg=(), key="img", roi=None) -> Request:
    return Request(key, "base", roi, 32, tuple(fg), tuple(bg))


def test_a_request_continues_the_previous_one_only_when_it_adds_points():
    first = request(fg=[(1, 2, 3)])
    assert request(fg=[(1, 2, 3)], bg=[(4, 5, 6)]).added_to(first) == [((4, 5, 6), 0)]
    assert request(fg=[(1, 2, 3)]).added_to(first) == []
    assert request(fg=[(9, 9, 9)]).added_to(first) is None  # a point moved: start afresh
    assert request(fg=[(1, 2, 3), (7, 7, 7)], key="other").added_to(first) is None  # another image
    assert request(fg=[(1, 2, 3), (7, 7, 7)], roi=(0, 0, 0, 5, 5, 5)).added_to(first) is None


def test_states_are_kept_packed_and_the_oldest_dropped():
    store = InteractionStore(capacity=2)
    label = np.zeros((5, 6, 7), dtype=np.uint8)
    label[1:3, 2:4, 3] = 1
    for name in ("a", "b", "c"):
        store.put(name, State.of(request(), label))
    assert store.get("a") is None and np.array_equal(store.get("c").label(), label)


def test_session_and_reset_are_checked():
    assert session_name(None, request()) == "image:img:base"
    assert session_name("case1:lesion", request()) == "session:case1:lesion"
    for bad in ({"session": ["x"]}, {"session": "x" * 129}, {"session": "tab\there"}, {"reset_state": "maybe"}):
        with pytest.raises(InputError, match="session|reset_state"):
            InferOptions.from_params(bad)
    assert InferOptions.from_params({"reset_state": "true"}).reset_state
    assert not InferOptions.from_params({}).reset_state


def test_a_walk_without_roi_stops_where_the_structure_stops_looking_like_the_clicked_one():
    """Clicks-only propagation keeps a slice's mask only if its mean intensity is within the seed's spread (at
    least INTENSITY_TOLERANCE) of the seed's mean: past a lesion's ends the decoder rates flat tissue as highly."""
    rng = np.random.default_rng(0)
    seed_slice = np.full((32, 32), 0.3)
    seed_slice[8:20, 8:20] = rng.normal(0.6, 0.05, (12, 12))  # a lesion brighter than what surrounds it
    lesion = square((32, 32), 8, 20, 8, 20)
    looks = Looks.of(seed_slice, lesion)
    assert looks.spread == pytest.approx(INTENSITY_TOLERANCE)  # a homogeneous seed: the floor applies
    next_slice = seed_slice + 0.05  # the same lesion, a little brighter on the next slice
    assert looks.matches(next_slice, lesion)
    assert not looks.matches(seed_slice, square((32, 32), 22, 30, 22, 30))  # flat tissue 0.3 darker: another one
    mixed = seed_slice.copy()
    mixed[8:20, 8:14] = 0.1  # a heterogeneous lesion: its own spread is the tolerance
    wide = Looks.of(mixed, lesion)
    assert wide.spread > 0.2 and wide.matches(mixed + 0.15, lesion) and not looks.matches(mixed, lesion)
