"""Benchmark of EEGPT on the CPU; prints ratios measured in one run.

1. Generation: per-token latency of the key/value-cached rollout (``EEGPT.generate``) vs the
   reference twin that re-runs the whole sequence at every step (``use_cache=False``), for 30 and
   300 generated tokens after a 4-token prompt (target: cached >= 10x faster at 300 tokens).
   Also the largest difference between the two forecasts.
2. Training step (forward + backward + AdamW, next-token objective) with the attention on
   ``F.scaled_dot_product_attention`` vs the written-out twin (``attn_impl="plain"``), at a
   smoke-like shape (8 tokens: reported only; on a CPU SDPA's backward loses there) and at 128
   tokens (target: plain / SDPA >= 1).
3. Steps/s of the ``tiny`` preset at smoke-like sizes (batch 32 windows, 14-62 electrodes,
   4-8 one-second tokens), pre-training and fine-tuning.

Times are the minimum over interleaved repeats, of the wall clock or (``--clock cpu``) of this
process's CPU time. Usage: ``python benchmarks/bench_eegpt.py [--threads N] [--preset m]
[--electrodes 8] [--clock wall|cpu] [--quick]``. One intra-op thread by default (as
``torch.utils.benchmark``); ``--threads 0`` keeps torch's default.
"""

from __future__ import annotations

import argparse
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

from workbench.analysis.efficiency import best_times  # noqa: E402
from workbench.models import create_model  # noqa: E402
from workbench.objectives.autoregressive import AutoregressiveObjective  # noqa: E402

N_VOCAB = 62


CLOCK: Callable[[], float] = time.perf_counter  # --clock cpu: time.process_time



def make_batch(B: int, C: int, n_tokens: int, token_len: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(B, C, n_tokens * token_len, generator=g),
            "ch_ids": torch.randint(0, N_VOCAB, (B, C), generator=g),
            "ch_mask": torch.ones(B, C, dtype=torch.bool),
            "y": torch.randint(0, 3, (B,), generator=g)}


def generation(preset: str, electrodes: int, lengths: tuple[int, ...], repeats: int) -> list:
    torch.manual_seed(0)
    model = create_model("eegpt", preset, n_channels=N_VOCAB).eval()
    b = make_batch(1, electrodes, 4, model.encoder.token_len)
    rows = []
    for n in lengths:
        def cached(n=n):
            return model.generate(b["x"], n, b["ch_ids"])

        def recompute(n=n):
            return model.generate(b["x"], n, b["ch_ids"], use_cache=False)

        t = best_times({"cached": cached, "recompute": recompute}, repeats, clock=CLOCK)
        err = (cached() - recompute()).abs().max().item()
        c_ms, r_ms = 1e3 * t["cached"] / n, 1e3 * t["recompute"] / n
        print(f"[1] {preset}, {electrodes} electrodes, {n} tokens: cached {c_ms:.2f} ms/token, "
              f"recompute {r_ms:.2f} ms/token, max |diff| {err:.1e}")
        rows.append(("generation speed-up, cache vs recompute", f"{n} tokens", r_ms / c_ms,
                     ">= 10" if n >= 300 else "(short)", r_ms / c_ms >= 10 or n < 300))
    return rows


def train_step_fn(model: torch.nn.Module, batch: dict, kind: str) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    objective = AutoregressiveObjective()

    def step():
        if kind == "pretrain":
            loss, _ = objective(model, batch)
        else:
            out = model(batch["x"], batch["ch_ids"], ch_mask=batch["ch_mask"])
            loss = F.cross_entropy(out["logits"], batch["y"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def attention_impls(shapes: list[tuple[str, int, int, int]], repeats: int) -> list:
    rows = []
    for preset, B, C, N in shapes:
        fns = {}
        for impl in ("sdpa", "plain"):
            torch.manual_seed(0)
            model = create_model("eegpt", preset, n_channels=N_VOCAB, attn_impl=impl)
            fns[impl] = train_step_fn(model, make_batch(B, C, N, model.encoder.token_len),
                                      "pretrain")
        t = best_times(fns, repeats, clock=CLOCK)
        r = t["plain"] / t["sdpa"]
        print(f"[2] {preset}, {B} x {C} electrodes x {N} tokens: SDPA {1e3 * t['sdpa']:.1f} ms, "
              f"plain {1e3 * t['plain']:.1f} ms per training step")
        long_seq = N >= 64  # SDPA's CPU kernels pay off on long sequences, not on 4-8 tokens
        rows.append(("train step, plain / SDPA", f"{preset} {B}x{C}x{N}", r,
                     ">= 1" if long_seq else "(report)", r >= 1 or not long_seq))
    return rows


def tiny_steps(sizes: list[tuple[int, int]], repeats: int) -> list:
    rows = []
    for C, N in sizes:
        for kind in ("pretrain", "finetune"):
            torch.manual_seed(0)
            name = "eegpt" if kind == "pretrain" else "eegpt_classifier"
            extra = {} if kind == "pretrain" else {"n_outputs": 3, "n_chans": C}
            model = create_model(name, "tiny", n_channels=N_VOCAB, **extra)
            step = train_step_fn(model, make_batch(32, C, N, model.encoder.token_len), kind)
            sec = best_times({"s": step}, repeats, clock=CLOCK)["s"]
            print(f"[3] tiny {kind}, 32 x {C} electrodes x {N} tokens: {1e3 * sec:.1f} ms/step "
                  f"({1 / sec:.1f} steps/s)")
            rows.append((f"tiny {kind} steps/s", f"32x{C}x{N}", 1 / sec, "> 10", sec < 0.1))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--preset", default="m", help="eegpt preset of the generation benchmark")
    ap.add_argument("--electrodes", type=int, default=8, help="electrodes rolled out at once")
    ap.add_argument("--quick", action="store_true", help="fewer repeats and sizes (smoke run)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall time, or this process's CPU time (with one thread: the work "
                         "done, without the waits of a machine shared with other jobs)")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.perf_counter if args.clock == "wall" else time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    reps = 1 if args.quick else 3
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.clock} clock")
    rows = generation(args.preset, args.electrodes, (30, 300), reps)
    shapes = [("tiny", 32, 32, 8), ("tiny", 4, 8, 128)]
    rows += attention_impls(shapes[:1] if args.quick else shapes, reps)
    sizes = [(14, 4), (62, 8)] if args.quick else [(14, 4), (14, 8), (32, 4), (62, 4), (62, 8)]
    rows += tiny_steps(sizes, reps)

    print("\n| measure | at | value | target | met |\n|---|---|---|---|---|")
    for what, at, value, target, ok in rows:
        print(f"| {what} | {at} | {value:.2f}{'' if 'steps/s' in what else 'x'} | {target} | "
              f"{'yes' if ok else 'NO'} |")


if __name__ == "__main__":
    main()
