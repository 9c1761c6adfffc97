"""Benchmark of STELAR's criss-cross encoder against full attention over all C x P tokens.

Both encoders are the ``paper`` preset (width 64, 2 blocks, 2 heads, the same patch embedding);
the reference replaces every criss-cross block by a full-attention block over the ``C * P``
tokens of a window (``attention="full"``, RoPE on the patch index). Measured in one run, on the
same inputs, for 19 x 30 and 62 x 30 tokens (30 s at 200 Hz, 200-sample patches):

- forward + backward time (minimum over interleaved rounds, so load drifts hit both alike);
- peak tensor memory of one forward + backward (the PyTorch profiler's allocation events,
  ``workbench.analysis.efficiency.peak_memory``);

for the attention kernel the model uses (``F.scaled_dot_product_attention``) and for the plain
kernel that materialises the attention matrices (``impl="plain"``). Prints the ratios
full / criss-cross; the target is > 1 for time and memory at 62 x 30.

Usage: ``python benchmarks/bench_stelar.py [--threads N] [--batch B] [--rounds R]``. One
intra-op thread by default (see ``bench_ssm.py``).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import torch

try:
    import workbench  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.analysis.efficiency import peak_memory  # noqa: E402
from workbench.models import create_model  # noqa: E402
from workbench.models.stelar import set_attention_impl  # noqa: E402

MB = 2**20
N_PATCHES, PATCH_LEN = 30, 200


def build(attention: str, impl: str, n_chans: int) -> torch.nn.Module:
    torch.manual_seed(0)
    enc = create_model("stelar", "paper", attention=attention, n_channels=max(19, n_chans))
    return set_attention_impl(enc.encoder, impl)


def step(enc: torch.nn.Module, x: torch.Tensor) -> None:
    enc(x).square().mean().backward()
    enc.zero_grad(set_to_none=True)


def measure(n_chans: int, impl: str, batch: int, rounds: int) -> dict[str, tuple[float, int]]:
    x = torch.randn(batch, n_chans, N_PATCHES * PATCH_LEN, generator=torch.Generator().manual_seed(0))
    encs = {a: build(a, impl, n_chans) for a in ("criss_cross", "full")}
    peaks = {}
    for name, enc in encs.items():
        step(enc, x)  # warm-up (allocator, kernels)
        gc.collect()
        peaks[name] = peak_memory(lambda enc=enc: step(enc, x), torch.device("cpu"))[0]
    best = {name: float("inf") for name in encs}
    for _ in range(rounds):
        for name, enc in encs.items():
            t0 = time.perf_counter()
            step(enc, x)
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: (best[name], peaks[name]) for name in encs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: default)")
    ap.add_argument("--batch", type=int, default=2, help="windows per call")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds (minimum reported)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); STELAR paper "
          f"encoder (d=64, 2 blocks, 2 heads), batch {args.batch}, forward + backward")
    rows = []
    for impl in ("sdpa", "plain"):
        for n_chans in (19, 62):
            r = measure(n_chans, impl, args.batch, args.rounds)
            (tc, mc), (tf, mf) = r["criss_cross"], r["full"]
            rows.append((impl, f"{n_chans} x {N_PATCHES}", tc, tf, mc, mf))
            print(f"[{impl}] {n_chans} x {N_PATCHES}: criss-cross {tc * 1e3:.0f} ms, "
                  f"{mc / MB:.0f} MiB; full {tf * 1e3:.0f} ms, {mf / MB:.0f} MiB")
    print("\n| kernel | tokens (C x P) | time criss-cross | time full | time ratio full/cc "
          "| peak mem criss-cross | peak mem full | memory ratio full/cc | target met |")
    print("|---|---|---|---|---|---|---|---|---|")
    for impl, at, tc, tf, mc, mf in rows:
        ok = "yes" if (tf / tc > 1 and mf / mc > 1) else ("NO" if at.startswith("62") else "-")
        print(f"| {impl} | {at} | {tc * 1e3:.0f} ms | {tf * 1e3:.0f} ms | {tf / tc:.2f}x | "
              f"{mc / MB:.1f} MiB | {mf / MB:.1f} MiB | {mf / mc:.2f}x | {ok} |")


if __name__ == "__main__":
    main()
