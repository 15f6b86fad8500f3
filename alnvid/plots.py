"""Figures for run folders and reports (matplotlib, headless, written atomically as PNG)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from alnvid.utils import atomic_path  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def plot_training_curves(epochs: pd.DataFrame, path: str | Path, *, title: str = "") -> Path:
    """Loss and accuracy per epoch, training vs validation (the study's Figure 4). Epochs without a value (not
    validated: `trainer.val_every`) are left out, so the validated ones join up."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("loss", "acc")):
        for stage, style in (("train", "-"), ("val", "--")):
            column = f"{stage}_{metric}"
            if column in epochs:
                rows = epochs.dropna(subset=[column])
                ax.plot(rows["epoch"] + 1, rows[column], style, marker="o", ms=3,
                        label="training" if stage == "train" else "validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy" if metric == "acc" else "cross-entropy loss")
        ax.grid(alpha=0.3)
        ax.legend()
    if "val_auc" in epochs:
        rows = epochs.dropna(subset=["val_auc"])
        axes[1].plot(rows["epoch"] + 1, rows["val_auc"], ":", marker="s", ms=3, label="validation AUC")
        axes[1].legend()
    fig.suptitle(title)
    return _save(fig, Path(path))


def plot_roc_curves(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: str | Path, *, title: str = "",
                    points: dict[str, tuple[float, float]] | None = None) -> Path:
    """ROC curves (name -> (fpr, tpr, auc)); optional operating points (name -> (1 - spec, sens)) as markers."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
    for (name, (x, y)), marker in zip((points or {}).items(), "os^Dvp*"):
        ax.plot([x], [y], marker, ms=8, label=name)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title)
    return _save(fig, Path(path))


def plot_pr_curves(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: str | Path, *,
                   title: str = "", prevalence: float | None = None) -> Path:
    """Precision-recall curves (name -> (recall, precision, average precision))."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (recall, precision, ap) in curves.items():
        ax.step(recall, precision, where="post", label=f"{name} (AP {ap:.3f})")
    if prevalence is not None:
        ax.axhline(prevalence, color="grey", lw=0.8, ls=":", label=f"prevalence {prevalence:.2f}")
    ax.set_xlabel("recall (sensitivity)")
    ax.set_ylabel("precision (PPV)")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(title)
    return _save(fig, Path(path))


def plot_calibration(predictions: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, *,
                     bins: int = 5, title: str = "") -> Path:
    """Observed fraction of metastasis against mean predicted probability, in equal-count bins."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (labels, probs) in predictions.items():
        order = np.argsort(probs)
        groups = [g for g in np.array_split(order, min(bins, len(order))) if len(g)]
        ax.plot([probs[g].mean() for g in groups], [labels[g].mean() for g in groups], marker="o", label=name)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="perfect calibration")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed fraction with metastasis")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return _save(fig, Path(path))
