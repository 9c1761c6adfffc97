"""Training-step throughput of the ART encoder vs a plain ``nn.TransformerEncoder`` of its size.

Prints, in one run on the same input, samples per second of one training step (forward,
backward, ``AdamW.step``) of

* ours: ``create_model("art_encoder", "paper")``: adaptive tokenizer (3 Conv1d + BatchNorm +
  GELU, ``AdaptiveAvgPool1d(16)``, Linear to 128) + ``E_pos`` + ``E_chan`` + ``E_rate`` + 3
  post-norm layers (d_model 128, 8 heads, FFN 256, GELU) + mean over the 16 tokens;
* plain: the *same* tokenizer (an identical copy: same weights) feeding a plain
  ``torch.nn.TransformerEncoder`` built directly (3 layers, d_model 128, 8 heads, FFN 256, GELU,
  dropout 0.1, post-norm, ``batch_first``) + mean over the tokens, with no channel, rate or
  position embeddings,

and the ratio ours / plain (target: >= 0.9, i.e. within 10 %). Both sides see the same 16
tokens from the same tokenizer, so the ratio measures what the ART encoder adds around a plain
Transformer (embedding look-ups and adds, id checks, input handling). The loss is the mean
square of the embedding (its value is irrelevant; both sides do the same backward work).

Input: ``--batch`` single-channel 2 s windows at 200 Hz (T = 400), random channel and rate ids.
Timing alternates ours/plain in ABBA order over ``--repeats`` rounds after warm-up; it reports
the throughput of each side's fastest block (the least disturbed by other processes), their ratio,
and the median of the per-round ratios. On CUDA it synchronises around each timed block and uses
bf16 autocast unless ``--amp none``.

Run: ``python benchmarks/bench_art.py [--device auto] [--batch N] [--steps N] [--repeats 8]
[--threads N]``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.models import create_model  # noqa: E402
from workbench.utils import get_device  # noqa: E402


class PlainEncoder(nn.Module):
    """The same tokenizer + a plain ``nn.TransformerEncoder`` + mean over tokens."""

    def __init__(
        self,
        tokenizer: nn.Module,
        d_model: int = 128,
        n_heads: int = 8,
        ffn_dim: int = 256,
        n_layers: int = 3,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.tokenizer = tokenizer
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, ffn_dim, dropout, activation="gelu", batch_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.transformer(self.tokenizer(x[:, 0])).mean(dim=1)  # (N, d_model)


def _timed_steps(step, n: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--batch",
        type=int,
        default=None,
        help="windows per step (default: 512 on CUDA, the paper's, 64 on CPU)",
    )
    p.add_argument("--n-times", type=int, default=400, help="samples per window (2 s at 200 Hz)")
    p.add_argument("--steps", type=int, default=None, help="steps per timed block")
    p.add_argument("--repeats", type=int, default=8, help="alternating ours/plain rounds")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--amp", choices=["auto", "bf16", "none"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (torch.set_num_threads); 1 is steadier on a shared machine",
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = get_device(args.device)
    cuda = device.type == "cuda"
    batch = args.batch or (512 if cuda else 64)
    steps = args.steps or (20 if cuda else 2)
    use_bf16 = args.amp == "bf16" or (args.amp == "auto" and cuda)
    torch.manual_seed(args.seed)

    ours = create_model("art_encoder", "paper").to(device)
    cfg = ours.config
    plain = PlainEncoder(
        copy.deepcopy(ours.tokenizer),
        cfg["d_model"],
        cfg["n_heads"],
        cfg["ffn_dim"],
        cfg["n_layers"],
        cfg["dropout"],
    ).to(device)
    x = torch.randn(batch, 1, args.n_times, device=device)
    ch_ids = torch.randint(0, cfg["n_channels"], (batch,), device=device)
    rate_id = torch.randint(0, 2, (batch,), device=device)

    def make_step(model: nn.Module, forward):
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=7e-4)
        model.train()

        def step() -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = forward().float().pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    step_ours = make_step(ours, lambda: ours(x, ch_ids, rate_id)["embedding"])
    step_plain = make_step(plain, lambda: plain(x))
    for s in (step_ours, step_plain):
        _timed_steps(s, args.warmup, device)
    t_ours, t_plain, ratios = [], [], []
    for r in range(args.repeats):
        # ABBA order: a slow spell on a shared machine hits both sides alike.
        pair = [("ours", step_ours), ("plain", step_plain)]
        times = {
            name: _timed_steps(s, steps, device) for name, s in (pair if r % 2 == 0 else pair[::-1])
        }
        t_ours.append(times["ours"])
        t_plain.append(times["plain"])
        ratios.append(times["plain"] / times["ours"])  # throughput ours / plain, this round
    ours_sps, plain_sps = batch * steps / min(t_ours), batch * steps / min(t_plain)
    ratio = ours_sps / plain_sps
    paired = statistics.median(ratios)
    n_ours = sum(q.numel() for q in ours.parameters())
    n_plain = sum(q.numel() for q in plain.parameters())
    print(
        f"device: {device} ({torch.cuda.get_device_name(device) if cuda else 'CPU'}, "
        f"{torch.get_num_threads()} threads), torch {torch.__version__}, "
        f"{'bf16 autocast' if use_bf16 else 'fp32'}"
    )
    print(
        f"input: {batch} windows x {args.n_times} samples; {steps} steps per block, "
        f"{args.repeats} alternating (ABBA) rounds; throughput of the fastest block"
    )
    print(f"ours  (art_encoder paper, {n_ours:,} params):        {ours_sps:10.1f} samples/s")
    print(f"plain (tokenizer + nn.TransformerEncoder, {n_plain:,}): {plain_sps:10.1f} samples/s")
    verdict = "within 10 %" if ratio >= 0.9 else "MORE than 10 % slower"
    print(
        f"ratio ours / plain: {ratio:.3f} ({verdict}); median of per-round ratios "
        f"{paired:.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})"
    )
    return {
        "ours_samples_per_s": ours_sps,
        "plain_samples_per_s": plain_sps,
        "ratio": ratio,
        "paired_ratio_median": paired,
    }


if __name__ == "__main__":
    main()
