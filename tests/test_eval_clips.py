"""Evaluation over several clips per video (`data.eval_clips`): where the clips are, and how they are averaged."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from alnvid.config import DataConfig
from alnvid.data.sampling import eval_clip_indices, segment_indices
from alnvid.errors import AlnvidError
from alnvid.models.module import ALNClassifier


def test_clips_interleave_over_the_loop():
    assert eval_clip_indices(32, 4, 1).tolist() == [segment_indices(32, 4, random=False).tolist()]
    assert eval_clip_indices(32, 4, 2).tolist() == [[2, 10, 18, 26], [6, 14, 22, 30]]  # offsets 1/4 and 3/4
    assert eval_clip_indices(10, 4, 3).tolist() == [[0, 2, 5, 7], [1, 3, 6, 8], [2, 4, 7, 9]]
    assert sorted(eval_clip_indices(24, 4, 6).ravel().tolist()) == list(range(24))  # K*T = n: every frame once


def test_eval_clips_must_be_a_positive_whole_number():
    with pytest.raises(AlnvidError, match="eval_clips"):
        DataConfig(eval_clips=0)


@torch.no_grad()
def test_a_video_model_averages_the_probabilities_of_its_clips():
    torch.manual_seed(0)
    module = ALNClassifier("tin", num_frames=4).eval()
    clips = torch.rand(2, 3, 3, 4, 32, 32)  # 2 videos x 3 clips of (3, T, H, W)
    together = module.class_probabilities(clips)
    one_by_one = torch.stack([torch.stack([module.class_probabilities(clips[b, k:k + 1])[0] for k in range(3)])
                              for b in range(2)])
    assert not torch.allclose(one_by_one[:, 0], one_by_one[:, 1])  # the clips differ, so the test can tell
    torch.testing.assert_close(together, one_by_one.mean(1), atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose(together.sum(1).numpy(), 1.0, atol=1e-6)
