"""ALNClassifier: the study's loss and optimiser, P(metastasis) = softmax class 1, bf16 and channels_last."""
from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from alnvid.models.module import FUSED_ADAM_DEVICES, ALNClassifier


def _batches(kind: str, n: int = 4) -> DataLoader:
    shape = (3, 4, 32, 32) if kind == "clip" else (3, 32, 32)
    items = [{"x": torch.rand(shape), "label": i % 2, "patient_id": f"P{i}", "line": i + 2} for i in range(n)]
    return DataLoader(items, batch_size=2)


def test_probability_is_softmax_of_class_one():
    module = ALNClassifier("resnet50").eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(module.class_probabilities(x)[:, 1], module(x).softmax(-1)[:, 1])
        # several frames of one video: their probabilities are averaged into one
        frames = torch.rand(1, 3, 3, 32, 32)
        expected = module(frames[0]).softmax(-1).mean(0)
        assert torch.allclose(module.class_probabilities(frames)[0], expected)


def test_clip_input_norm_standardises_each_item_before_the_backbone():
    torch.manual_seed(0)
    module = ALNClassifier("tin", num_frames=4, input_norm="clip").eval()
    gain = torch.tensor([1.0, 0.3, 2.0]).view(3, 1, 1, 1, 1)
    x = torch.rand(3, 3, 4, 32, 32) * gain + torch.tensor([0.0, 0.5, -1.0]).view(3, 1, 1, 1, 1)
    items = x.numpy().reshape(3, -1)
    expected = (items - items.mean(1, keepdims=True)) / (items.std(1, ddof=1, keepdims=True) + 1e-3)
    with torch.no_grad():
        direct = module.model(torch.from_numpy(expected.reshape(x.shape)).float())
        assert torch.allclose(module(x), direct, atol=1e-5)
        # another gain and offset (a scanner's brightness and contrast) leaves the prediction as it was
        assert torch.allclose(module.class_probabilities(x * 1.7 + 0.2), module.class_probabilities(x), atol=2e-3)
        plain = ALNClassifier("tin", num_frames=4).eval()
        assert torch.equal(plain(x), plain.model(x))


def test_optimiser_is_adam_with_the_study_learning_rate():
    optimizer = ALNClassifier("resnet50").configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["lr"] == 1e-4
    cosine = ALNClassifier("resnet50", schedule="cosine", epochs=10).configure_optimizers()
    assert isinstance(cosine["lr_scheduler"], torch.optim.lr_scheduler.CosineAnnealingLR)


def test_fused_adam_takes_the_reference_adam_step():
    """The fused optimiser (one kernel) moves every weight as torch's per-tensor Adam does, to float rounding."""
    if "cpu" not in FUSED_ADAM_DEVICES:
        pytest.skip(f"torch {torch.__version__} has no fused Adam on the CPU (2.4 and later have)")
    torch.manual_seed(0)
    module = ALNClassifier("tin", num_frames=4, lr=5e-4, weight_decay=1e-3)
    fused = module.configure_optimizers()
    assert fused.defaults["fused"]
    start = [p.detach().clone() for p in module.parameters()]
    reference_weights = [w.clone().requires_grad_() for w in start]
    reference = torch.optim.Adam(reference_weights, lr=5e-4, weight_decay=1e-3, fused=False)
    for _ in range(3):
        for p, q in zip(module.parameters(), reference_weights):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        fused.step()
        reference.step()
    with torch.no_grad():
        assert max((p - q).abs().max() for p, q in zip(module.parameters(), reference_weights)) < 1e-6
        moved = torch.cat([(p - w).abs().flatten() for p, w in zip(module.parameters(), start)])
        assert moved.mean() > 3e-4  # three steps of about lr each, some of them cancelling


@pytest.mark.parametrize("model, kind", [("tin", "clip"), ("resnet50", "image")])
def test_bf16_mixed_precision_and_channels_last_train(model, kind):
    module = ALNClassifier(model, num_frames=4, channels_last=True)
    before = [p.detach().clone() for p in module.parameters()]
    trainer = L.Trainer(accelerator="cpu", precision="bf16-mixed", max_steps=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, train_dataloaders=_batches(kind, 2), val_dataloaders=_batches(kind))
    assert torch.isfinite(trainer.callback_metrics["train_loss"])
    assert 0 <= float(trainer.callback_metrics["val_auc"]) <= 1
    assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))
    outputs = trainer.predict(module, _batches(kind))
    rows = [row for batch in outputs for row in batch]
    assert [r["patient_id"] for r in rows] == ["P0", "P1", "P2", "P3"]
    assert all(0 <= r["prob"] <= 1 for r in rows)
