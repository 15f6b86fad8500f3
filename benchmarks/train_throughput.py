"""Training throughput of the registered backbones: forward + backward + Adam step on random data.

Prints, per model, step time (ms), clips/s (images/s for static models) and peak memory, plus the TSM
fixed-shift ResNet50 baseline and the TIN/TSM throughput ratio. Each model runs in a fresh process so that peak
memory (CUDA: max_memory_allocated; CPU: peak RSS) is its own.

    python benchmarks/train_throughput.py                        # CUDA if available: batch 4, T 16, 224 px, bf16
    python benchmarks/train_throughput.py --models tin --channels-last
    python benchmarks/train_throughput.py --device cpu --batch 1 --frames 8 --size 112 --steps 3 --precision fp32
"""
from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext

import torch

from alnvid.models import build_model, get_model_spec, list_models


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list_models(), help="registered names (default: all)")
    parser.add_argument("--batch", type=int, default=4, help="clips per step")
    parser.add_argument("--image-batch", type=int, default=None, help="images per step for static models "
                        "(default: batch x frames, the same number of frames as a video step)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224, help="input side in px (raised to a model's minimum, e.g. 75 for InceptionV3)")
    parser.add_argument("--precision", choices=["bf16-mixed", "fp32"], default="bf16-mixed")
    parser.add_argument("--channels-last", action="store_true", help="channels_last(_3d) model and input")
    parser.add_argument("--reference-interlace", action="store_true",
                        help="TIN with the matmul interlace instead of the fused Triton kernels (CUDA)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.models) - set(list_models()))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list_models()}")
    if "tsm" not in args.models:
        args.models.append("tsm")  # the baseline, always in the same run
    return args


def measure(name: str, args: argparse.Namespace) -> dict[str, float | str]:
    """Time ``args.steps`` training steps of model ``name`` after ``args.warmup`` warm-up steps."""
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    if args.reference_interlace:
        from alnvid.models.interlace import TemporalInterlace

        TemporalInterlace.fused = False
    spec = get_model_spec(name)
    size = max(args.size, spec.min_input_size)
    kwargs = {"aux_logits": False} if name == "inception_v3" and size < 299 else {}  # aux head needs >= 299 px
    model = build_model(name, num_frames=args.frames, **kwargs).to(device).train()
    if spec.input_kind == "clip":
        items = args.batch
        x = torch.rand(items, 3, args.frames, size, size, device=device)
    else:
        items = args.image_batch or args.batch * args.frames
        x = torch.rand(items, 3, size, size, device=device)
    if args.channels_last:
        # 2D CNNs on folded frames (TIN, TSM) fold the clip themselves; channels_last weights make the rest follow.
        memory_format = torch.channels_last_3d if x.dim() == 5 and not spec.time_folded else torch.channels_last
        model = model.to(memory_format=memory_format)
        if x.dim() == 4 or memory_format == torch.channels_last_3d:
            x = x.contiguous(memory_format=memory_format)
    y = torch.arange(items, device=device) % 2
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, **({"fused": True} if device.type == "cuda" else {}))
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if args.precision == "bf16-mixed" else nullcontext()
    )

    def step() -> None:
        with autocast:
            out = model(x)
            if hasattr(out, "aux_logits"):
                loss = torch.nn.functional.cross_entropy(out.logits, y) + 0.4 * torch.nn.functional.cross_entropy(
                    out.aux_logits, y
                )
            else:
                loss = torch.nn.functional.cross_entropy(out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # Linux: KiB
    step_s = statistics.median(times)
    return {
        "model": name,
        "unit": "clips/s" if spec.input_kind == "clip" else "images/s",
        "items": items,
        "size": size,
        "step_ms": step_s * 1e3,
        "rate": items / step_s,
        "peak_mib": peak_mib,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    memory_kind = "max_memory_allocated" if args.device.startswith("cuda") else "peak RSS"
    print(
        f"{device_name}, torch {torch.__version__}, {args.precision}, channels_last={args.channels_last}, "
        f"{'matmul' if args.reference_interlace else 'fused'} interlace, "
        f"batch {args.batch} clips x {args.frames} frames, {args.size} px, {args.warmup} warm-up + {args.steps} "
        f"timed steps (median)"
    )
    print(f"{'model':<14}{'batch':>6}{'px':>5}{'step ms':>10}{'rate':>10}  {'unit':<9}{'peak MiB':>10}  ({memory_kind})")
    results = {}
    spawn = multiprocessing.get_context("spawn")
    for name in args.models:
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            result = pool.submit(measure, name, args).result()
        results[name] = result
        print(
            f"{name:<14}{result['items']:>6}{result['size']:>5}{result['step_ms']:>10.1f}{result['rate']:>10.2f}  "
            f"{result['unit']:<9}{result['peak_mib']:>10.0f}",
            flush=True,
        )
    if "tin" in results:
        ratio = results["tin"]["rate"] / results["tsm"]["rate"]
        print(f"TIN / TSM throughput: {ratio:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
