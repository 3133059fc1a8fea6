"""Choosing the next image to annotate: pure functions over scores and embeddings, each saying why."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from ..options import Options

STRATEGIES = ("uncertainty", "diversity", "hybrid")


class NextSampleOptions(Options):
    """A next-sample request's options, parsed one way for every strategy ("5" and 5 are the same seed)."""

    what = "bad active-learning parameter"

    seed: int | None = Field(None, ge=0, le=2**32 - 1,
                             description="makes the choice reproducible; empty = `random` draws afresh and the FM "
                                         "strategies use seed 0")


def _normalise(x: np.ndarray) -> np.ndarray:
    span = x.max() - x.min()
    return np.ones_like(x) if span <= 1e-12 else (x - x.min()) / span


def distances_to_labelled(embeddings: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """Cosine distance from each candidate to its nearest labelled image (k-center greedy's criterion).

    With nothing labelled yet, distance to the pool's mean stands in: the most atypical image comes first.
    """
    def unit(m):
        return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)

    cand = unit(embeddings)
    ref = unit(labelled if len(labelled) else embeddings.mean(0, keepdims=True))
    return 1.0 - (cand @ ref.T).max(axis=1)


def rank(strategy: str, ids: list[str], uncertainty: np.ndarray, embeddings: np.ndarray,
         labelled_embeddings: np.ndarray, seed: int = 0) -> list[tuple[str, float]]:
    """Candidates best first with their scores; a seeded tiny jitter breaks exact ties reproducibly."""
    if strategy == "uncertainty":
        scores = uncertainty.astype(float)
    elif strategy == "diversity":
        scores = distances_to_labelled(embeddings, labelled_embeddings)
    elif strategy == "hybrid":  # uncertain *and* unlike what is labelled: both scaled to [0, 1] over the pool
        scores = _normalise(uncertainty.astype(float)) * _normalise(distances_to_labelled(embeddings,
                                                                                        labelled_embeddings))
    else:
        raise ValueError(f"unknown strategy {strategy!r}")
    ties = np.random.default_rng(seed).uniform(0, 1e-9, len(ids))
    order = np.argsort(-(scores + ties), kind="stable")
    return [(ids[i], float(scores[i])) for i in order]
