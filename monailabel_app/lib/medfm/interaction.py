"""What the server remembers between a case's interactions, so a correction click edits the previous answer.

Clients send every prompt so far with each request (MONAI Label's sam2 format, the stock Slicer plugin, the CVPR 2025
interactive protocol). A state holds the previous request's prompts and answer; a new request whose prompts are the
old ones plus new clicks (same image content, adapter, roi and propagation) is a continuation, and only the new
clicks are applied to the old answer. Anything else starts afresh. A request names its state with `session` (the
MedFMAdapt panel sends one per image and segment); without it, the image's content and the adapter name it, which is
what the stock plugin gets. `reset_state` forgets it first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

MAX_STATES = 16  # answers are kept bit-packed: a 512 x 512 x 200 label costs 6.5 MB


@dataclass(frozen=True)
class Request:
    """The parts of an interactive request that decide whether it continues a state."""

    image_key: str
    adapter: str
    roi: tuple[int, ...] | None
    max_propagation: int
    foreground: tuple[tuple[int, int, int], ...]
    background: tuple[tuple[int, int, int], ...]

    def same_case(self, other: Request) -> bool:
        return (self.image_key, self.adapter, self.roi, self.max_propagation) == \
            (other.image_key, other.adapter, other.roi, other.max_propagation)

    def added_to(self, earlier: Request) -> list[tuple[tuple[int, int, int], int]] | None:
        """The points this request adds to `earlier` ((ijk, 1|0), foreground first), or None when it does not
        extend it (a point was removed or moved, or the case differs)."""
        if not self.same_case(earlier):
            return None
        added = []
        for now, before, flag in ((self.foreground, earlier.foreground, 1),
                                  (self.background, earlier.background, 0)):
            rest = list(now)
            for point in before:
                if point not in rest:
                    return None
                rest.remove(point)
            added += [(p, flag) for p in rest]
        return added


@dataclass
class State:
    request: Request
    shape: tuple[int, int, int]
    packed: np.ndarray

    @classmethod
    def of(cls, request: Request, label: np.ndarray) -> State:
        return cls(request, tuple(label.shape), np.packbits(label > 0))

    def label(self) -> np.ndarray:
        size = int(np.prod(self.shape))
        return np.unpackbits(self.packed, count=size).reshape(self.shape).astype(np.uint8)


class InteractionStore:
    """The newest states, by name; thread-safe, least recently used dropped first."""

    def __init__(self, capacity: int = MAX_STATES):
        self._states: OrderedDict[str, State] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def get(self, name: str) -> State | None:
        with self._lock:
            state = self._states.get(name)
            if state is not None:
                self._states.move_to_end(name)
            return state

    def put(self, name: str, state: State) -> None:
        with self._lock:
            self._states[name] = state
            self._states.move_to_end(name)
            while len(self._states) > self._capacity:
                self._states.popitem(last=False)

    def drop(self, name: str) -> None:
        with self._lock:
            self._states.pop(name, None)


def session_name(session: str | None, request: Request) -> str:
    """The state's name: the client's `session`, else the image's content and the adapter."""
    return f"session:{session}" if session else f"image:{request.image_key}:{request.adapter}"
