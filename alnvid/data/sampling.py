"""Which frames of a loop make a clip: TSN-style segments spread over the whole sweep."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


def segment_indices(n_frames: int, length: int, *, random: bool, rng: np.random.Generator | None = None,
                    offset: float = 0.5) -> np.ndarray:
    """Indices of `length` frames, one per equal segment of the loop (TSN sampling).

    Training (`random=True`) picks a random frame inside each segment; evaluation takes the point at `offset`
    (0 = start, 1 = end) of each segment, by default its centre, so evaluation is deterministic. A loop shorter than `length` has segments narrower than one frame: its
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
        positions = (1 - offset) * edges[:-1] + offset * edges[1:]
    return np.minimum(np.floor(positions).astype(np.int64), n_frames - 1)


def eval_clip_indices(n_frames: int, length: int, clips: int = 1) -> np.ndarray:
    """Frame indices (clips, length) of the evaluation clips: clip k takes offset (k + 1/2) / clips in every
    segment, so the clips interleave and together cover the loop evenly (TSN's test-time clips). One clip is the
    segment centres."""
    return np.stack([segment_indices(n_frames, length, random=False, offset=(k + 0.5) / clips) for k in range(clips)])


class SeededShuffle(Sampler):
    """Training order and per-item augmentation seeds as a function of (seed, epoch) alone.

    Yields (index, item_seed) pairs. Lightning calls `set_epoch` before each epoch, so an epoch draws the
    same order and the same augmentations whether the run is fresh or resumed from a checkpoint, and whether
    the DataLoader uses worker processes (persistent or not) or none.
    """

    def __init__(self, size: int, seed: int = 0):
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        seeds = torch.randint(0, 2**31 - 1, (self.size,), generator=generator).tolist()
        return iter(zip(order, seeds))
