"""Non-inferiority with a confidence bound: is a new version's Dice a real loss against the live one, or noise?

A decision taken on a difference smaller than the noise of its own measurement is a coin flip (issue 27: a version
with +0.073 box Dice on unseen slabs was refused for -0.009 one-click Dice on one held-out slab). So the guard pairs
the two versions' scores per unit (a held-out image x label, or a slice x label where images are few), takes the
mean paired difference (new - active) and a bootstrap interval of it, and says:

- better:          the lower bound is above 0;
- not worse:       the lower bound is at or above -margin;
- worse:           the upper bound is below -margin;
- cannot tell yet: anything else, or fewer than MIN_UNITS units. The version stays inactive and the decision says
                   about how much more data would let it decide.

The interval is a BCa bootstrap (scipy.stats.bootstrap) of the mean difference, 90 % two-sided, so its lower bound
is a 95 % one-sided bound; the resampling seed is fixed, so the same scores always give the same decision. Units from
the same image are resampled as if independent (slices of one structure are correlated, so with few images the
interval is narrower than the truth): a reason to add held-out images, which the advice asks for.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.90  # two-sided; the lower bound is a 95 % one-sided bound
MIN_UNITS = 5  # below this a bootstrap interval is not worth its name: "cannot tell yet"
RESAMPLES = 2000
SEED = 0
BETTER, NOT_WORSE, WORSE, CANNOT_TELL = "better", "not worse", "worse", "cannot tell yet"
ACCEPTED = (BETTER, NOT_WORSE)


@dataclass(frozen=True)
class Unit:
    """One paired measurement: the same slice or image x label, scored for the new and the active version."""

    source: str  # where it comes from: "held-out images", "held-out slices", the validation's own words
    id: str
    new: float
    active: float

    @property
    def diff(self) -> float:
        return self.new - self.active


def interval(diffs: list[float]) -> tuple[float, float]:
    """The CONFIDENCE two-sided bootstrap interval of the mean of `diffs` (BCa; percentile where BCa is undefined,
    e.g. when every difference is the same)."""
    data = np.asarray(diffs, dtype=float)
    if np.ptp(data) == 0:
        return float(data[0]), float(data[0])
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ci = stats.bootstrap((data,), np.mean, confidence_level=CONFIDENCE, n_resamples=RESAMPLES,
                                 method=method, rng=np.random.default_rng(SEED)).confidence_interval
        if np.isfinite(ci.low) and np.isfinite(ci.high):
            break
    return float(ci.low), float(ci.high)


def state_of(low: float, high: float, margin: float) -> str:
    if low > 0:
        return BETTER
    if low >= -margin:
        return NOT_WORSE
    if high < -margin:
        return WORSE
    return CANNOT_TELL


def judge(units: list[Unit], margin: float) -> dict:
    """The state of a set of paired units against `margin`, with the interval, the counts per source and, when it
    cannot tell yet, about how many more units would let it decide (`more_units`)."""
    n = len(units)
    by_source: dict[str, int] = {}
    for u in units:
        by_source[u.source] = by_source.get(u.source, 0) + 1
    out: dict = {"n_units": n, "units_by_source": by_source, "confidence": CONFIDENCE}
    if not n:
        return {**out, "state": None, "diff": None, "interval": None}
    diffs = [u.diff for u in units]
    mean = float(np.mean(diffs))
    out["diff"] = round(mean, 4)
    if n < MIN_UNITS:
        if margin >= 1:  # a Dice difference is never below -1: with such a margin nothing can be worse
            return {**out, "state": NOT_WORSE, "interval": None}
        return {**out, "state": CANNOT_TELL, "interval": None, "more_units": MIN_UNITS - n}
    low, high = interval(diffs)
    state = state_of(low, high, margin)
    out.update(state=state, interval=[round(low, 4), round(high, 4)])
    if state == CANNOT_TELL:
        out["more_units"] = _more_units(n, mean, low, high, margin)
    return out


def _more_units(n: int, mean: float, low: float, high: float, margin: float) -> int | None:
    """Units to add for an interval of the same spread, shrinking as 1/sqrt(n), to clear -margin on the side the mean
    is on; None when the mean sits on -margin (no amount of such data would decide)."""
    half, gap = (mean - low, mean + margin) if mean > -margin else (high - mean, -margin - mean)
    if gap <= 0:
        return None
    return max(1, math.ceil(n * (half / gap) ** 2) - n)
