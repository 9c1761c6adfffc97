"""Benchmark of Trace's CTR-FFN and streaming inference on the CPU; prints ratios measured in
one run.

1. CTR-FFN (TemporalFormer routing, E = 16 experts, top-2, one shared expert, d 256, expert
   width 512) forward + backward vs the dense SwiGLU of the same active width ((2 + 1) x 512,
   the Non-MoE ablation) on the same tokens (target: at most 1.5x the dense time). The token-wise
   Vanilla MoE is printed beside it.
2. Streaming: per-patch latency of ``TraceEncoder.stream`` (paper preset, 19 channels, one
   window) at patch 30 vs recomputing the whole 30-patch window with the full forward (target:
   at least 5x faster); the stream's tokens are checked against the full forward.
3. Training steps/s of the ``tiny`` preset at smoke sizes (batch 32, 14-62 channels, 4-8
   patches of 200 samples; forward, forecasting loss, backward, AdamW). Not a ratio: the
   throughput the smoke profile plans with.

Usage: ``python benchmarks/bench_trace.py [--threads N] [--quick]``. One intra-op thread by
default (as ``torch.utils.benchmark``); ``--threads 0`` keeps torch's default.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

try:
    import workbench  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.analysis.efficiency import best_times  # noqa: E402
from workbench.models import create_model  # noqa: E402
from workbench.models.layers.moe import CTRFFN, SwiGLU, dense_hidden  # noqa: E402
from workbench.objectives.forecasting import ForecastingObjective  # noqa: E402

D, HIDDEN, E, K = 256, 512, 16, 2



def ffn_step(module: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        out = module(x)
        y = out[0] if isinstance(out, tuple) else out
        loss = y.square().mean()
        if isinstance(out, tuple):
            loss = loss + 0.01 * out[1]["balance"]
        module.zero_grad(set_to_none=True)
        loss.backward()

    return run


def bench_ffn(B: int, N: int, C: int, repeats: int) -> tuple[dict[str, float], int]:
    torch.manual_seed(0)
    x = torch.randn(B, N, C, D)
    fns = {
        "ctr": ffn_step(CTRFFN(D, HIDDEN, E, K, n_shared=1, router="temporal"), x),
        "vanilla": ffn_step(CTRFFN(D, HIDDEN, E, K, n_shared=1, router="token"), x),
        "dense": ffn_step(SwiGLU(D, dense_hidden(HIDDEN, K, 1)), x),
    }
    return best_times(fns, repeats), B * N * C


def bench_stream(C: int, N: int, repeats: int) -> tuple[float, float, float, float]:
    """(full-window seconds, mean step seconds, last step seconds, max |diff|)."""
    torch.manual_seed(0)
    enc = create_model("trace", "paper").encoder.eval()
    x = torch.randn(1, C, N * enc.patch_len) * 30
    patches = x.split(enc.patch_len, dim=-1)
    with torch.no_grad():
        full_t = best_times({"full": lambda: enc(x)}, repeats)["full"]
        full = enc(x)["tokens"]
        mean_t, last_t, err = float("inf"), float("inf"), 0.0
        for _ in range(repeats):
            stream = enc.stream()
            times = []
            for t, p in enumerate(patches):
                t0 = time.perf_counter()
                out = stream.step(p)
                times.append(time.perf_counter() - t0)
                err = max(err, (out["tokens"] - full[:, :, t]).abs().max().item())
            mean_t, last_t = min(mean_t, sum(times) / len(times)), min(last_t, times[-1])
    return full_t, mean_t, last_t, err


def train_step(C: int, N: int) -> Callable[[], None]:
    """One training step of the tiny preset on a batch of 32 windows of C x N patches."""
    torch.manual_seed(0)
    model = create_model("trace", "tiny")
    objective = ForecastingObjective()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = {"x": torch.randn(32, C, N * 200) * 30}

    def step() -> None:
        loss, _ = objective(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def bench_tiny(sizes: list[tuple[int, int]], repeats: int) -> list[tuple[int, int, float]]:
    return [(C, N, best_times({"s": train_step(C, N)}, repeats)["s"]) for C, N in sizes]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--quick", action="store_true", help="fewer repeats, smaller inputs")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    reps = 2 if args.quick else 5
    B, N, C = (2, 16, 19) if args.quick else (4, 30, 19)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    rows = []

    # 1. CTR-FFN vs dense FFN of the same active width
    t, n_tok = bench_ffn(B, N, C, reps)
    r = t["ctr"] / t["dense"]
    print(f"[1] {n_tok} tokens (B={B}, N={N}, C={C}), d={D}, E={E}, k={K}: CTR-FFN "
          f"{t['ctr'] * 1e3:.1f} ms, Vanilla MoE {t['vanilla'] * 1e3:.1f} ms, dense SwiGLU "
          f"({dense_hidden(HIDDEN, K, 1)}) {t['dense'] * 1e3:.1f} ms (forward + backward)")
    rows.append(("CTR-FFN / dense FFN time (fwd+bwd)", f"E={E}, k={K}", r, "<= 1.5", r <= 1.5))
    rv = t["vanilla"] / t["dense"]
    rows.append(("Vanilla MoE / dense FFN time (fwd+bwd)", f"E={E}, k={K}", rv, "(info)", True))

    # 2. streaming vs recomputing the window
    n_stream = 12 if args.quick else 30
    full_t, mean_t, last_t, err = bench_stream(19, n_stream, reps if not args.quick else 1)
    print(f"[2] paper preset, 19 channels: full forward of {n_stream} patches "
          f"{full_t * 1e3:.1f} ms; stream step mean {mean_t * 1e3:.1f} ms, at patch "
          f"{n_stream} {last_t * 1e3:.1f} ms; max |stream - full| {err:.1e}")
    rows.append(("streaming speed-up per patch (at the last patch)", f"{n_stream} patches",
                 full_t / last_t, ">= 5", full_t / last_t >= 5))
    rows.append(("streaming speed-up per patch (mean over the stream)", f"{n_stream} patches",
                 full_t / mean_t, "(info)", True))

    # 3. tiny preset throughput at smoke sizes
    sizes = [(14, 4), (62, 8)] if args.quick else [(14, 4), (19, 4), (32, 6), (62, 8)]
    tiny = bench_tiny(sizes, reps)
    for C_, N_, s in tiny:
        print(f"[3] tiny preset, batch 32 x {C_} channels x {N_} patches: {s * 1e3:.0f} ms per "
              f"training step, {1 / s:.1f} steps/s")

    print("\n| measure | at | value | target | met |\n|---|---|---|---|---|")
    for what, at, value, target, ok in rows:
        print(f"| {what} | {at} | {value:.2f}x | {target} | {'yes' if ok else 'NO'} |")


if __name__ == "__main__":
    main()
