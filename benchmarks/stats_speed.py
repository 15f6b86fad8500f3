"""Time the paired DeLong test and a 2000-resample stratified bootstrap CI at n = 61, 300 and 10 000 patients."""
from __future__ import annotations

import time

import numpy as np

from alnvid.stats import bootstrap_auc_ci, bootstrap_test, delong_test


def best_of(fn, repeats: int = 3) -> float:
    """Fastest of `repeats` runs, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"{'n':>6} {'DeLong paired test':>20} {'bootstrap CI (2000)':>21} {'paired bootstrap test (2000)':>30}")
    for n in (61, 300, 10_000):
        labels = (rng.random(n) < 0.4).astype(int)
        a = rng.normal(size=n) + labels
        b = 0.7 * a + rng.normal(size=n)
        t_delong = best_of(lambda: delong_test(labels, a, b))
        t_boot = best_of(lambda: bootstrap_auc_ci(labels, a, n_boot=2000, seed=0), repeats=2)
        t_test = best_of(lambda: bootstrap_test(labels, a, b, n_boot=2000, seed=0), repeats=2)
        print(f"{n:>6} {t_delong * 1e3:>17.2f} ms {t_boot * 1e3:>18.1f} ms {t_test * 1e3:>27.1f} ms")


if __name__ == "__main__":
    main()
