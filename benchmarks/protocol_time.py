"""Projected wall time of the study protocol (5 folds x 300 epochs x 168 training + 42 validation videos, T 16,
224 px, batch 4) per model, with folds run one after another and N at a time (`alnvid cv --parallel-folds N`).

Each measurement trains ALNClassifier with Lightning as `alnvid fit` does (the machine's auto precision,
channels_last and workers; the run's callbacks: best/last checkpoints, epochs.csv, bootstrap CIs, reseeding) on
synthetic cached clips: uint8 frames at the cache's 256 px side, random-cropped to 224 px and flipped in the loader
workers, as training clips are. After warm-up epochs it times whole epochs (training, validation and everything
between) and each training step (synchronised), and prints:

- step ms and clips/s of the training step alone;
- epoch wall / sum of training-step times (the between-step overhead; goal <= 1.15 on a GPU);
- projected protocol minutes = ceil(folds / N) x epochs x epoch wall, where N folds run concurrently (each in its
  own process, measured together on the same device).

    python benchmarks/protocol_time.py                          # GPU if present: tin and resnet50, N = 1, 2, 4
    python benchmarks/protocol_time.py --models tin tsm r3d_18 --parallel 1 2 4 5
    python benchmarks/protocol_time.py --tiny                   # seconds on a CPU: exercises the code, not the study
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

PROTOCOL = {"folds": 5, "epochs": 300, "train": 168, "val": 42, "frames": 16, "size": 224, "cache_side": 256,
            "batch": 4}
TINY = {"folds": 5, "epochs": 300, "train": 8, "val": 4, "frames": 4, "size": 32, "cache_side": 40, "batch": 4}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tin", "resnet50"])
    parser.add_argument("--parallel", nargs="+", type=int, default=None,
                        help="folds run concurrently to measure (default 1 2 4 on a GPU, 1 on a CPU)")
    parser.add_argument("--warmup-epochs", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per measurement")
    parser.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto")
    parser.add_argument("--tiny", action="store_true", help="tiny clips and sets on the CPU (for the test suite)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    args.settings = TINY if args.tiny else PROTOCOL
    if args.tiny:
        args.device = "cpu"
    return args


class SyntheticClips:
    """Stand-ins for cached videos: a pool of uint8 frame stacks (T, S, S, 3) at the cache's side, served as
    training clips (random crop, horizontal flip) or evaluation clips (centre crop), in [0, 1], shaped like
    the data module's items ((3, T, H, W) clips, or the middle frame (3, H, W) for static models)."""

    def __init__(self, count: int, settings: dict, *, train: bool, clip: bool, seed: int = 0):
        import numpy as np

        self.count, self.train, self.clip = count, train, clip
        self.frames, self.crop = settings["frames"], settings["size"]
        self.pool = np.random.default_rng(seed).integers(
            0, 256, (8, settings["frames"], settings["cache_side"], settings["cache_side"], 3), dtype=np.uint8)
        self.seed = seed

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        import numpy as np
        import torch

        video = self.pool[index % len(self.pool)]
        side = video.shape[1]
        if self.train:
            rng = np.random.default_rng((self.seed, index))
            top, left = rng.integers(0, side - self.crop + 1, size=2)
            flip = bool(rng.integers(2))
        else:
            top = left = (side - self.crop) // 2
            flip = False
        frames = video[:, top:top + self.crop, left:left + self.crop]
        if flip:
            frames = frames[:, :, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float().div_(255)
        if not self.clip:
            x = x[:, self.frames // 2]
        return {"x": x, "label": index % 2, "patient_id": f"P{index}", "line": index + 2}


def measure(model: str, args: argparse.Namespace) -> dict:
    """Train `model` for warm-up + timed epochs as `fit` does; time the epochs and the training steps."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    from alnvid.callbacks import BootstrapAUC, EpochHistory, EpochSeed
    from alnvid.config import RunConfig
    from alnvid.models.module import ALNClassifier
    from alnvid.models.registry import get_model_spec
    from alnvid.train import resolve_auto

    settings = args.settings
    config = RunConfig()
    config.trainer.accelerator = args.device
    if args.tiny:
        config.data.num_workers = 0
    runtime = resolve_auto(config)
    gpu = torch.cuda.is_available() and args.device != "cpu"
    clip = get_model_spec(model).input_kind == "clip"
    workers = config.data.num_workers

    def loader(count: int, train: bool) -> DataLoader:
        return DataLoader(SyntheticClips(count, settings, train=train, clip=clip), batch_size=settings["batch"],
                          shuffle=train, drop_last=train, num_workers=workers, pin_memory=gpu,
                          persistent_workers=workers > 0, prefetch_factor=(4 if gpu else 2) if workers else None)

    def sync() -> None:
        if gpu:
            torch.cuda.synchronize()

    class Timer(L.Callback):
        def __init__(self):
            self.epoch_starts: list[float] = []
            self.step_sums: list[float] = []
            self.end = 0.0

        def on_train_epoch_start(self, trainer, pl_module):
            sync()
            self.epoch_starts.append(time.perf_counter())
            self.step_sums.append(0.0)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            sync()
            self.step_start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            sync()
            self.step_sums[-1] += time.perf_counter() - self.step_start

        def on_train_end(self, trainer, pl_module):
            sync()
            self.end = time.perf_counter()

    L.seed_everything(0, verbose=False)
    module = ALNClassifier(model, num_frames=settings["frames"], channels_last=config.model.channels_last)
    timer = Timer()
    with tempfile.TemporaryDirectory() as folder:
        checkpoints = L.pytorch.callbacks.ModelCheckpoint(dirpath=folder, filename="best", monitor="val_auc",
                                                          mode="max", save_last=True, enable_version_counter=False)
        trainer = L.Trainer(max_epochs=args.warmup_epochs + args.epochs, accelerator="gpu" if gpu else "cpu",
                            devices=1, precision=config.trainer.precision, logger=False, enable_progress_bar=False,
                            enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=1,
                            callbacks=[timer, checkpoints, EpochHistory(Path(folder) / "epochs.csv"), EpochSeed(0),
                                       BootstrapAUC(n_boot=500)])
        trainer.fit(module, loader(settings["train"], True), loader(settings["val"], False))
    ends = timer.epoch_starts[1:] + [timer.end]
    timed = range(args.warmup_epochs, len(ends))
    epoch_wall = sum(ends[i] - timer.epoch_starts[i] for i in timed) / len(timed)
    step_sum = sum(timer.step_sums[i] for i in timed) / len(timed)
    steps = settings["train"] // settings["batch"]
    return {"model": model, "device": runtime["device"], "precision": runtime["precision"],
            "channels_last": runtime["channels_last"], "workers": workers, "epoch_wall_s": epoch_wall,
            "step_sum_s": step_sum, "step_ms": 1e3 * step_sum / steps,
            "clips_per_s": settings["train"] / step_sum, "overhead_ratio": epoch_wall / step_sum}


def _worker(model: str, args: argparse.Namespace, start, results) -> None:
    start.wait()  # all N processes train together
    results.put(measure(model, args))


def measure_concurrent(model: str, args: argparse.Namespace, processes: int) -> list[dict]:
    """`processes` measurements of `model` at once, each in its own (spawned) process, as parallel folds run."""
    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    workers = [context.Process(target=_worker, args=(model, args, start, results)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    start.set()
    measured = [results.get() for _ in workers]
    for worker in workers:
        worker.join()
        if worker.exitcode:
            raise SystemExit(f"a measuring process of {model} failed (exit code {worker.exitcode})")
    return measured


def project(measured: list[dict], settings: dict, processes: int) -> float:
    """Protocol minutes when `processes` folds train at a time at the measured (slowest) epoch wall time."""
    epoch_wall = max(m["epoch_wall_s"] for m in measured)
    return math.ceil(settings["folds"] / processes) * settings["epochs"] * epoch_wall / 60


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    import torch

    gpu = torch.cuda.is_available() and args.device != "cpu"
    parallel = args.parallel or ([1, 2, 4] if gpu else [1])
    settings = args.settings
    rows = []
    for model in args.models:
        single = [measure(model, args)]
        row = dict(single[0], protocol_min={1: project(single, settings, 1)})
        for processes in parallel:
            if processes > 1:
                concurrent = measure_concurrent(model, args, processes)
                row["protocol_min"][processes] = project(concurrent, settings, processes)
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return rows
    scale = "TINY settings (exercise only, not the study)" if args.tiny else "the study's settings"
    print(f"{rows[0]['device']}, torch {torch.__version__}, {rows[0]['precision']}, channels_last="
          f"{rows[0]['channels_last']}, {rows[0]['workers']} workers; {scale}: {settings['folds']} folds x "
          f"{settings['epochs']} epochs x ({settings['train']} train + {settings['val']} val) clips, "
          f"T {settings['frames']}, {settings['size']} px, batch {settings['batch']}")
    header = "".join(f"{f'N={n} min':>11}" for n in parallel)
    print(f"{'model':<14}{'step ms':>9}{'clips/s':>9}{'epoch s':>9}{'wall/steps':>11}{header}")
    for row in rows:
        projected = "".join(f"{row['protocol_min'][n]:>11.1f}" for n in parallel)
        print(f"{row['model']:<14}{row['step_ms']:>9.1f}{row['clips_per_s']:>9.1f}{row['epoch_wall_s']:>9.2f}"
              f"{row['overhead_ratio']:>11.2f}{projected}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
