"""Instance contrastive pre-training: random resized crop views and the NT-Xent loss.

The One Model for All encoder is pre-trained on single channels: two views of each window by
random resized crop (a random-length sub-sequence, resized back to the window length by linear
interpolation), embedded by the model, pulled together by NT-Xent against the other ``2N - 2``
views of the batch.

References
----------
.. [1] Chen, T. et al. (2020). A Simple Framework for Contrastive Learning of Visual
       Representations (SimCLR). ICML.
.. [2] "One Model for All: Universal Pre-training for EEG based Emotion Recognition across
       Heterogeneous Datasets and Paradigms", Section III-B2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ContrastiveObjective",
    "crop_params",
    "nt_xent_logits",
    "nt_xent_loss",
    "nt_xent_reference",
    "random_resized_crop",
    "resized_crop",
    "resized_crop_reference",
]


# ----------------------------------------------------------------------------- NT-Xent
def nt_xent_logits(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Similarity logits of the ``2N`` views and the index of each view's positive.

    Returns ``logits`` (2N, 2N) = cosine similarity / temperature with ``-inf`` on the diagonal
    (a view is not its own candidate) and ``targets`` (2N,): view ``i`` of ``z1`` is paired with
    view ``i`` of ``z2`` (index ``i + N``) and vice versa. Computed in float32.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(
            f"nt_xent: expected two (N, d) tensors of the same shape, got "
            f"{tuple(z1.shape)} and {tuple(z2.shape)}."
        )
    if temperature <= 0:
        raise ValueError(
            f"Invalid value for the 'temperature' parameter: expected > 0, got {temperature!r}."
        )
    N = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2N, d), unit norm
    logits = z @ z.T / temperature  # (2N, 2N) cosine similarities / tau
    eye = torch.eye(2 * N, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(eye, float("-inf"))
    idx = torch.arange(N, device=z.device)
    targets = torch.cat([idx + N, idx])  # (2N,)
    return logits, targets


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """NT-Xent (normalised temperature-scaled cross entropy), mean over the ``2N`` anchors.

    ``L_ij = -log( exp(sim(z_i, z_j) / tau) / sum_{k != i} exp(sim(z_i, z_k) / tau) )`` for the
    positive pair ``(i, j)``, with ``sim`` the cosine similarity.

    Parameters
    ----------
    z1, z2 : Tensor, shape (N, d)
        Embeddings of the first and second views; row ``i`` of each comes from sample ``i``.
    temperature : float
        ``tau`` (**our default** 0.1).
    """
    logits, targets = nt_xent_logits(z1, z2, temperature)
    return F.cross_entropy(logits, targets)


def nt_xent_reference(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Slow twin of :func:`nt_xent_loss`: the formula evaluated with explicit loops."""
    z = list(z1) + list(z2)
    n2 = len(z)

    def sim(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (u @ v) / (u.norm() * v.norm())

    total = z1.new_zeros(())
    for i in range(n2):
        j = (i + n2 // 2) % n2  # the other view of the same sample
        num = torch.exp(sim(z[i], z[j]) / temperature)
        den = sum(torch.exp(sim(z[i], z[k]) / temperature) for k in range(n2) if k != i)
        total = total - torch.log(num / den)
    return total / n2


# ----------------------------------------------------------------------------- crops
def crop_params(
    n: int,
    n_times: int,
    min_scale: float = 0.5,
    max_scale: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` crops of a window of ``n_times`` samples.

    Each crop length is uniform over the integers in
    ``[ceil(min_scale * T), floor(max_scale * T)]`` (at least 2 samples) and its start is uniform
    over the valid positions. Random numbers come from ``generator`` (CPU) when given.

    Returns
    -------
    start, length : Tensor of int64, shape (n,)
    """
    if not 0 < min_scale <= max_scale <= 1:
        raise ValueError(
            f"random_resized_crop: expected 0 < min_scale <= max_scale <= 1, got "
            f"min_scale={min_scale}, max_scale={max_scale}."
        )
    lo = max(2, min(n_times, math.ceil(min_scale * n_times - 1e-9)))
    hi = max(lo, min(n_times, math.floor(max_scale * n_times + 1e-9)))
    gen_device = generator.device if generator is not None else device
    u = torch.rand(n, 2, generator=generator, device=gen_device)
    length = lo + (u[:, 0] * (hi - lo + 1)).long().clamp(max=hi - lo)  # (n,) in [lo, hi]
    start = torch.minimum((u[:, 1] * (n_times - length + 1)).long(), n_times - length)  # (n,)
    return start.to(device), length.to(device)


def resized_crop(x: torch.Tensor, start: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """Crop ``x[..., start:start+length]`` per row and resize it back to ``T`` (vectorised).

    Linear interpolation with the end points of the crop mapped onto the end points of the
    output (``align_corners=True``): output sample ``k`` reads the crop at position
    ``k * (length - 1) / (T - 1)``. A full-length crop is the identity.

    Parameters
    ----------
    x : Tensor, shape (N, T) or (N, C, T)
        All channels of a row share its crop.
    start, length : Tensor of int64, shape (N,)
    """
    T = x.shape[-1]
    k = torch.arange(T, device=x.device, dtype=torch.float64)  # (T,)
    step = (length.to(torch.float64) - 1) / (T - 1)  # (N,)
    pos = start.to(torch.float64)[:, None] + k[None, :] * step[:, None]  # (N, T)
    i0 = pos.floor().long().clamp(0, T - 1)
    i1 = (i0 + 1).clamp(max=T - 1)
    w = (pos - i0).to(x.dtype)  # (N, T) weight of the right neighbour
    if x.dim() == 3:
        i0, i1, w = (t[:, None, :].expand(-1, x.shape[1], -1) for t in (i0, i1, w))  # (N, C, T)
    return x.gather(-1, i0) * (1 - w) + x.gather(-1, i1) * w


def resized_crop_reference(
    x: torch.Tensor, start: torch.Tensor, length: torch.Tensor
) -> torch.Tensor:
    """Slow twin of :func:`resized_crop`: slice each row and ``F.interpolate`` it."""
    squeeze = x.dim() == 2
    x3 = x[:, None, :] if squeeze else x  # (N, C, T)
    T = x3.shape[-1]
    rows = []
    for n in range(x3.shape[0]):
        s, L = int(start[n]), int(length[n])
        crop = x3[n : n + 1, :, s : s + L]  # (1, C, L)
        rows.append(F.interpolate(crop, size=T, mode="linear", align_corners=True))
    out = torch.cat(rows)  # (N, C, T)
    return out[:, 0] if squeeze else out


def random_resized_crop(
    x: torch.Tensor,
    min_scale: float = 0.5,
    max_scale: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random resized crop of a batch of windows (one crop per row, no Python loop).

    Parameters
    ----------
    x : Tensor, shape (N, T) or (N, C, T)
    min_scale, max_scale : float
        Crop length as a fraction of ``T`` (**our default** 0.5 to 1.0; the paper gives none).
    generator : torch.Generator, optional
        CPU generator for reproducible crops.

    Returns
    -------
    Tensor of the shape of ``x``.
    """
    start, length = crop_params(x.shape[0], x.shape[-1], min_scale, max_scale, generator, x.device)
    return resized_crop(x, start, length)


# ----------------------------------------------------------------------------- objective
class ContrastiveObjective(nn.Module):
    """NT-Xent between two random-resized-crop views of single-channel windows.

    ``loss, logs = objective(model, batch)`` with ``batch["x"]`` (B, 1, T), ``batch["ch_ids"]``
    (B, 1) and ``batch["rate_id"]`` (B,) (the ids are optional). Both views go through the model
    in one call of ``2B`` rows; ``model(...)["embedding"]`` (2B, d) feeds :func:`nt_xent_loss`.

    Logs ``loss`` and ``pos_acc``: the fraction of the ``2B`` views whose most similar other view
    (among ``2B - 1``) is their positive.

    Parameters
    ----------
    temperature : float
        NT-Xent temperature (**our default** 0.1).
    min_scale, max_scale : float
        Crop length range as fractions of ``T``.
    seed : int, optional
        Seed of a private CPU generator for the crops (otherwise the global RNG).

    References
    ----------
    .. [1] "One Model for All", Section III-B2.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        min_scale: float = 0.5,
        max_scale: float = 1.0,
        seed: int | None = None,
    ):
        super().__init__()
        if temperature <= 0:
            raise ValueError(
                f"Invalid value for the 'temperature' parameter: expected > 0, got {temperature!r}."
            )
        self.temperature, self.min_scale, self.max_scale = temperature, min_scale, max_scale
        self.generator = None
        if seed is not None:
            self.generator = torch.Generator().manual_seed(seed)

    def forward(
        self, model: nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        x = batch["x"]  # (B, 1, T)
        B = x.shape[0]
        views = [
            random_resized_crop(x, self.min_scale, self.max_scale, self.generator) for _ in range(2)
        ]
        xx = torch.cat(views)  # (2B, 1, T)

        def twice(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else torch.cat([t, t])

        out = model(xx, ch_ids=twice(batch.get("ch_ids")), rate_id=twice(batch.get("rate_id")))
        z = out["embedding"]  # (2B, d)
        logits, targets = nt_xent_logits(z[:B], z[B:], self.temperature)
        loss = F.cross_entropy(logits, targets)
        with torch.no_grad():
            acc = (logits.argmax(1) == targets).float().mean()
        return loss, {"loss": loss.detach(), "pos_acc": acc}  # 0-d tensors: no host sync
