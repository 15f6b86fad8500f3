"""`ALNClassifier`: one LightningModule for every backbone (the study's protocol: cross-entropy, Adam 1e-4).

It predicts P(metastasis) = softmax(logits)[:, 1]. A static model given several frames of one video
(input (B, K, 3, H, W)) averages the K frame probabilities into one per video, and a video model given several
clips of one video (input (B, K, 3, T, H, W), `eval_clips`) the K clip probabilities. Each evaluation epoch's
predictions are kept in `epoch_outputs[stage]` (stage = "val" or a test split name) as
(patient_id, label, prob, line) tuples, one per video, for callbacks (bootstrap CIs, Grad-CAM export) and for
the run's CSVs. Epoch scores (`val_auc`, the checkpoint's and early stopping's monitor) are per patient, the unit
of the study's statistics: `patient_scores` averages a patient's videos, as `stats.predictions.patient_level`
does.

Under DDP each process evaluates a shard, padded by the distributed sampler with repeats of the first items;
`gathered_outputs(stage)` merges every process's predictions back into the dataset's order, one per manifest
line, so every epoch score equals a one-device run's. Call it (never `epoch_outputs` directly) in epoch-end
hooks.
"""
from __future__ import annotations

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torchmetrics.functional.classification import binary_accuracy, binary_auroc

from alnvid.models.registry import build_model, get_model_spec

RUN_CONFIG_KEY = "alnvid_run_config"


def standardise_items(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Each item of a batch (a clip (3, T, H, W) or an image (3, H, W)) to zero mean and unit variance over all of
    its pixels: the `input_norm` 'clip' layer, with no parameters."""
    dims = tuple(range(1, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    std = x.std(dim=dims, keepdim=True)
    return (x - mean) / (std + eps)


FUSED_ADAM_DEVICES = ("cuda", "cpu") if torch.torch_version.TorchVersion(torch.__version__) >= "2.4" else ("cuda",)
"""Where torch has a fused Adam kernel (on the CPU since torch 2.4)."""


class ALNClassifier(L.LightningModule):
    """Binary ALN-metastasis classifier around a registered backbone."""

    def __init__(
        self,
        model_name: str = "tin",
        num_classes: int = 2,
        num_frames: int = 16,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        schedule: str = "none",
        epochs: int = 300,
        weights: str | None = None,
        channels_last: bool = False,
        aux_loss_weight: float = 0.4,
        input_norm: str = "none",
        consensus: str = "mean",
    ):
        super().__init__()
        self.save_hyperparameters()
        self.spec = get_model_spec(model_name)
        self.model = build_model(model_name, num_classes=num_classes, num_frames=num_frames, weights=weights,
                                 consensus=consensus)
        # 3D CNNs (5-D weights and clips) take channels_last_3d; 2D CNNs, on images or folded frames, channels_last.
        volumetric = self.spec.input_kind == "clip" and not self.spec.time_folded
        self.memory_format = torch.channels_last_3d if volumetric else torch.channels_last
        if channels_last:
            self.model = self.model.to(memory_format=self.memory_format)
        self.test_split_names: list[str] = []
        self.epoch_outputs: dict[str, list[tuple[str, int, float, int]]] = {}
        self._gathered: set[str] = set()
        self.run_config: dict | None = None
        """The run's settings (RunConfig.to_dict()), embedded in every checkpoint so that it works on its own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, classes) for a batch of clips (B, 3, T, H, W) or images (B, 3, H, W)."""
        out = self.model(self._laid_out(x))
        return out.logits if hasattr(out, "logits") else out

    def class_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities (B, classes); several frames (B, K, 3, H, W) or clips (B, K, 3, T, H, W) per item
        are averaged."""
        if x.dim() == (5 if self.spec.input_kind == "image" else 6):
            b, k = x.shape[:2]
            return self(x.flatten(0, 1)).float().softmax(-1).view(b, k, -1).mean(1)
        return self(x).float().softmax(-1)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x, y = self._laid_out(batch["x"]), batch["label"]
        out = self.model(x)
        if hasattr(out, "aux_logits"):  # InceptionV3 in training: main + auxiliary classifier
            logits = out.logits
            loss = F.cross_entropy(logits, y) + self.hparams.aux_loss_weight * F.cross_entropy(out.aux_logits, y)
        else:
            logits = out
            loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(-1) == y).float().mean()
        # sync_dist: under DDP the epoch's figures are averaged over every process's shard
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y), sync_dist=True)
        self.log("train_acc", acc, on_step=False, on_epoch=True, batch_size=len(y), sync_dist=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._start_epoch(["val"])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        auc, acc = self._epoch_scores("val")  # equal on every process: sync_dist averages equal values
        self.log("val_loss", self._epoch_loss("val"), prog_bar=True, sync_dist=True)
        self.log("val_auc", auc, prog_bar=True, sync_dist=True)
        self.log("val_acc", acc, sync_dist=True)

    def on_test_epoch_start(self) -> None:
        self._start_epoch(self._test_names())

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, self._test_names()[dataloader_idx])

    def on_test_epoch_end(self) -> None:
        for name in self._test_names():
            auc, acc = self._epoch_scores(name)
            self.log(f"{name}_loss", self._epoch_loss(name), add_dataloader_idx=False, sync_dist=True)
            self.log(f"{name}_auc", auc, add_dataloader_idx=False, sync_dist=True)
            self.log(f"{name}_acc", acc, add_dataloader_idx=False, sync_dist=True)

    def gathered_outputs(self, stage: str) -> list[tuple[str, int, float, int]]:
        """The epoch's predictions of `stage` from every process, once per manifest line, in the dataset's order.

        The first call of an epoch gathers (a collective call: every process must make it); later calls reuse it.
        """
        if stage not in self._gathered:
            self.epoch_outputs[stage] = gather_rows(self.epoch_outputs.get(stage, []), key=lambda row: row[3])
            self._gathered.add(stage)
        return self.epoch_outputs[stage]

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> list[dict]:
        probs = self.class_probabilities(batch["x"])[:, 1].tolist()  # one device-to-host copy, not one per item
        return [
            {"patient_id": pid, "line": int(line), "label": int(label), "prob": p}
            for pid, line, label, p in zip(batch["patient_id"], batch["line"].tolist(), batch["label"].tolist(), probs)
        ]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.run_config is not None:
            checkpoint[RUN_CONFIG_KEY] = self.run_config

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.run_config = checkpoint.get(RUN_CONFIG_KEY, self.run_config)

    def configure_optimizers(self):
        """Adam, fused into one kernel where every parameter allows it: the same update as the per-tensor loop
        up to float rounding, about 4 times faster on the CPU (ResNet50's 24 M parameters: 29 ms a step against
        133 ms, a third of a static model's step at 48 px)."""
        parameters = list(self.parameters())
        fused = all(p.is_floating_point() and p.device.type in FUSED_ADAM_DEVICES for p in parameters)
        optimizer = torch.optim.Adam(parameters, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay,
                                     fused=fused or None)
        if self.hparams.schedule == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, self.hparams.epochs))
            return {"optimizer": optimizer, "lr_scheduler": scheduler}
        return optimizer

    def _laid_out(self, x: torch.Tensor) -> torch.Tensor:
        """The input, standardised per clip or image if `input_norm` is 'clip', in the model's memory format (when
        channels_last is on and the ranks match)."""
        if self.hparams.get("input_norm", "none") == "clip":
            x = standardise_items(x)
        if self.hparams.channels_last and x.dim() == (5 if self.memory_format == torch.channels_last_3d else 4):
            return x.contiguous(memory_format=self.memory_format)
        return x

    def _test_names(self) -> list[str]:
        count = len(self.trainer.test_dataloaders) if self._trainer is not None else 1
        return self.test_split_names or [f"test_{i}" for i in range(count)]

    def _start_epoch(self, stages: list[str]) -> None:
        for stage in stages:
            self.epoch_outputs[stage] = []
            self._gathered.discard(stage)

    def _evaluate(self, batch: dict, stage: str) -> None:
        probs = self.class_probabilities(batch["x"])[:, 1]
        self.epoch_outputs[stage].extend(  # .tolist(): one device-to-host copy per batch, not one sync per item
            zip(batch["patient_id"], batch["label"].tolist(), probs.tolist(), batch["line"].tolist())
        )

    def _epoch_loss(self, stage: str) -> float:
        """Mean cross-entropy (the training loss) of the epoch's predictions over the whole evaluated set."""
        outputs = self.gathered_outputs(stage)
        if not outputs:
            return float("nan")
        probs = torch.tensor([o[2] for o in outputs], dtype=torch.float64)
        labels = torch.tensor([o[1] for o in outputs])
        return float(-torch.where(labels == 1, probs, 1 - probs).clamp_min(1e-12).log().mean())

    def _epoch_scores(self, stage: str) -> tuple[float, float]:
        """Per-patient AUROC and accuracy (P >= 0.5) of the epoch; AUROC is 0.5 where a set holds one class only."""
        labels, probs = patient_scores(self.gathered_outputs(stage))
        if not len(labels):
            return float("nan"), float("nan")
        labels, probs = torch.from_numpy(labels), torch.from_numpy(probs)
        acc = float(binary_accuracy(probs, labels, threshold=0.5))
        auc = float(binary_auroc(probs, labels)) if len(np.unique(labels.numpy())) == 2 else 0.5
        return auc, acc


def gather_rows(rows: list, key) -> list:
    """Every process's rows, merged into the order of the dataset they were evaluated from, once per `key`.

    Lightning's distributed samplers give process r the items r, r + W, r + 2W, ... of a W-process run, the
    evaluation sampler padding the last round with repeats of the first items; interleaving the processes'
    rows restores the dataset's order and dropping repeated keys (manifest lines) removes the padding.
    Without a process group the rows are returned as they are.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rows
    per_process: list[list] = [[] for _ in range(dist.get_world_size())]
    dist.all_gather_object(per_process, rows)
    merged, seen = [], set()
    for position in range(max(len(part) for part in per_process)):
        for part in per_process:
            if position < len(part) and key(part[position]) not in seen:
                seen.add(key(part[position]))
                merged.append(part[position])
    return merged


def patient_scores(outputs: list[tuple]) -> tuple[np.ndarray, np.ndarray]:
    """Per-patient (labels, probs) of an epoch's per-video (patient_id, label, prob, ...) outputs: the mean
    probability over a patient's videos, in order of first appearance. A patient whose videos carry different
    labels counts once per video, as in `stats.predictions.patient_level`."""
    labels_of: dict[str, set[int]] = {}
    for patient, label, *_ in outputs:
        labels_of.setdefault(patient, set()).add(int(label))
    units: dict[object, tuple[int, list[float]]] = {}
    for position, (patient, label, prob, *_) in enumerate(outputs):
        key = patient if len(labels_of[patient]) == 1 else (patient, position)
        units.setdefault(key, (int(label), []))[1].append(float(prob))
    labels = np.array([label for label, _ in units.values()], dtype=np.int64)
    probs = np.array([np.mean(probs) for _, probs in units.values()], dtype=np.float64)
    return labels, probs
