"""Which frames of a loop make a clip: TSN-style segments spread over the whole sweep."""
from __future__ import annotations

import numpy as np


def segment_indices(n_frames: int, length: int, *, random: bool, rng: np.random.Generator | None = None) -> np.ndarray:
    """Indices of `length` frames, one per equal segment of the loop (TSN sampling).

    Training (`random=True`) picks a random frame inside each segment; evaluation takes each segment's centre,
    so evaluation is deterministic. A loop shorter than `length` has segments narrower than one frame: its
    frames repeat in order (each is held for about length/n_frames steps) rather than wrapping around, so the
    clip still runs forward through the sweep once.
    """
    if n_frames < 1:
        raise ValueError("a loop needs at least one frame")
    edges = np.linspace(0, n_frames, length + 1)
    if random:
        rng = rng or np.random.default_rng()
        positions = edges[:-1] + rng.random(length) * (edges[1:] - edges[:-1])
    else:
        positions = (edges[:-1] + edges[1:]) / 2
    return np.minimum(np.floor(positions).astype(np.int64), n_frames - 1)
