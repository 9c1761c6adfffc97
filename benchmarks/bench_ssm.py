"""Benchmark of the pure-PyTorch Mamba-2 scan and of EEGM2 on the CPU; prints ratios measured
in one run.

1. SSD chunked scan vs the step-by-step recurrence (vectorised over batch and heads), 3,840 steps
   (target >= 5x faster).
2. SSD chunked scan vs the paper's minimal Listing 1 (quadratic inter-chunk term), 12,800 steps
   (target >= 2x faster).
   Both at batch 8, 8 heads, head size 64, state 16, chunk 64, forward only.
3. Peak memory (forward + backward) at 12,800 vs 1,280 steps of the scan, of EEGM2 (paper
   preset, 16 channels, batch 1; target ratio <= 12x, i.e. linear) and of the S5 ablation
   (Transformer blocks; quadratic).
4. EEGM2 forward + backward on 16 x 12,800 completes (wall time).

Peak memory is the peak of live tensor bytes added by the call, from the PyTorch profiler's
allocation events (``workbench.analysis.efficiency.cpu_peak_memory``).

Usage: ``python benchmarks/bench_ssm.py [--threads N] [--quick]``. One intra-op thread by
default (as ``torch.utils.benchmark``): on a shared machine two threads stall on each other's
barriers and the timings measure the scheduler; ``--threads 0`` keeps torch's default.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

try:
    import workbench  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.analysis.efficiency import best_times, cpu_peak_memory  # noqa: E402
from workbench.models import create_model  # noqa: E402
from workbench.models.layers.ssm import ssd_chunked, ssd_naive  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ssd_minimal.py
from ssd_minimal import ssd_minimal_listing  # noqa: E402

BATCH, HEADS, HEADDIM, STATE, CHUNK = 8, 8, 64, 16, 64
MB = 2**20


def ssd_inputs(L: int, requires_grad: bool = False, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, L, HEADS, HEADDIM, generator=g)
    dt = F.softplus(torch.randn(BATCH, L, HEADS, generator=g) - 2.0)
    A = -(torch.rand(HEADS, generator=g) * 4 + 0.5)
    B = torch.randn(BATCH, L, 1, STATE, generator=g)
    C = torch.randn(BATCH, L, 1, STATE, generator=g)
    args = [x, dt, A, B, C]
    if requires_grad:
        args = [a.requires_grad_() for a in args]
    return args



def fwd_bwd_peak(fn: Callable[[], torch.Tensor]) -> int:
    def run():
        out = fn()
        out.backward()
        return None

    gc.collect()
    return cpu_peak_memory(run)[0]


def scan_peak(fn: Callable, L: int) -> int:
    """Peak memory of a scan's forward + backward (inputs allocated beforehand)."""
    args = ssd_inputs(L, requires_grad=True)
    return fwd_bwd_peak(lambda: fn(*args, CHUNK).square().mean())


def model_peak(block: str, T: int) -> tuple[int, float]:
    torch.manual_seed(0)
    model = create_model("eegm2", "paper", n_chans=16, block=block)
    x = torch.randn(1, 16, T)

    def loss():
        out = model(x)
        return out["recon"].square().mean() + out["embedding"].square().mean()

    t0 = time.perf_counter()
    peak = fwd_bwd_peak(loss)
    return peak, time.perf_counter() - t0


def s5_lengths(quick: bool) -> tuple[int, int]:
    """(short, long) for S5: 1,280 / 12,800 when the attention matrices fit in free memory."""
    if quick:
        return 320, 3200
    try:
        import psutil

        free = psutil.virtual_memory().available
    except ImportError:
        free = 0
    # encoder 1 attends over all 12,800 steps: 4 heads x T^2 float32, ~5 such live in backward
    need = 5 * 4 * 12_800**2 * 4
    return (1280, 12_800) if free > 1.5 * need else (640, 6400)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--quick", action="store_true", help="short lengths (a smoke run)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    short_L, long_L, naive_L = (256, 1280, 384) if args.quick else (1280, 12_800, 3840)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); batch {BATCH}, "
          f"{HEADS} heads x {HEADDIM}, state {STATE}, chunk {CHUNK}")
    rows = []

    # 1. chunked vs naive recurrence
    with torch.no_grad():
        a1 = ssd_inputs(naive_L)
        t = best_times({"chunked": lambda: ssd_chunked(*a1, CHUNK)}, repeats=3)
        t.update(best_times({"naive": lambda: ssd_naive(*a1, CHUNK)}, repeats=1, warmup=0))
        err = (ssd_chunked(*a1, CHUNK) - ssd_naive(*a1, CHUNK)).abs().max().item()
    print(f"[1] L={naive_L}: chunked {t['chunked']:.3f} s, naive recurrence {t['naive']:.3f} s, "
          f"max |diff| {err:.1e}")
    rows.append(("SSD speed-up vs naive recurrence", f"L={naive_L}", t["naive"] / t["chunked"],
                 ">= 5", t["naive"] / t["chunked"] >= 5))

    # 2. chunked vs Listing 1
    with torch.no_grad():
        a2 = ssd_inputs(long_L)
        t = best_times({"chunked": lambda: ssd_chunked(*a2, CHUNK),
                        "listing": lambda: ssd_minimal_listing(*a2, CHUNK)}, repeats=3)
        err = (ssd_chunked(*a2, CHUNK) - ssd_minimal_listing(*a2, CHUNK)).abs().max().item()
    print(f"[2] L={long_L}: chunked {t['chunked']:.3f} s, Listing 1 {t['listing']:.3f} s, "
          f"max |diff| {err:.1e}")
    rows.append(("SSD speed-up vs minimal Listing 1", f"L={long_L}",
                 t["listing"] / t["chunked"], ">= 2", t["listing"] / t["chunked"] >= 2))
    a1 = a2 = None

    # 3a. scan memory
    peaks = {}
    for L in (short_L, long_L):
        for name, fn in (("chunked", ssd_chunked), ("listing", ssd_minimal_listing)):
            peaks[name, L] = scan_peak(fn, L)
    for name in ("chunked", "listing"):
        r = peaks[name, long_L] / peaks[name, short_L]
        print(f"[3] scan {name}: peak {peaks[name, short_L] / MB:.0f} MiB at {short_L}, "
              f"{peaks[name, long_L] / MB:.0f} MiB at {long_L} (x{r:.1f})")
        if name == "chunked":
            rows.append(("scan peak memory ratio (fwd+bwd)", f"{long_L}/{short_L}", r, "<= 12",
                         r <= 12))

    # 3b + 4. EEGM2 and S5
    m_short, _ = model_peak("mamba2", short_L)
    m_long, sec = model_peak("mamba2", long_L)
    r = m_long / m_short
    print(f"[3] EEGM2 paper, 16 ch, batch 1, fwd+bwd: {m_short / MB:.0f} MiB at {short_L}, "
          f"{m_long / MB:.0f} MiB at {long_L} (x{r:.1f})")
    print(f"[4] EEGM2 forward + backward on 16 x {long_L} completed in {sec:.1f} s "
          f"(under the profiler)")
    rows.append(("EEGM2 peak memory ratio (fwd+bwd)", f"{long_L}/{short_L}", r, "<= 12",
                 r <= 12))
    rows.append(("EEGM2 fwd+bwd on 16 x long input completes", f"L={long_L}", sec, "runs",
                 True))
    s_short_L, s_long_L = s5_lengths(args.quick)
    s_short, _ = model_peak("transformer", s_short_L)
    s_long, _ = model_peak("transformer", s_long_L)
    r5 = s_long / s_short
    print(f"[3] EEGM2-S5 (Transformer), fwd+bwd: {s_short / MB:.0f} MiB at {s_short_L}, "
          f"{s_long / MB:.0f} MiB at {s_long_L} (x{r5:.1f})")
    rows.append(("S5 peak memory ratio (fwd+bwd)", f"{s_long_L}/{s_short_L}", r5,
                 "(quadratic)", r5 > r))

    print("\n| measure | at | value | target | met |\n|---|---|---|---|---|")
    for what, at, value, target, ok in rows:
        unit = " s" if target == "runs" else "x"
        print(f"| {what} | {at} | {value:.2f}{unit} | {target} | {'yes' if ok else 'NO'} |")


if __name__ == "__main__":
    main()
