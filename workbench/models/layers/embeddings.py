"""Tokenizers that turn one raw EEG channel into a short sequence of ``d_model`` tokens.

- :class:`AdaptiveTokenizer` (the ART tokenizer of One Model for All): a Conv1d stack scans the
  whole window, ``AdaptiveAvgPool1d(n_tokens)`` pools the feature map to a fixed number of
  patches whatever the sampling rate, and a Linear projects each patch to ``d_model``.
- :class:`FixedPatchTokenizer` (the "Fixed-Patch Enc." ablation): non-overlapping
  ``patch_size``-sample patches, each projected to ``d_model`` by one Linear; the number of
  tokens grows with the window length.

Both take ``x`` of shape ``(N, T)`` (one channel per row) and return ``(N, n_tokens, d_model)``.

References
----------
.. [1] "One Model for All: Universal Pre-training for EEG based Emotion Recognition across
       Heterogeneous Datasets and Paradigms", Section III-D1 (Adaptive Resampling Tokenization).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AdaptiveTokenizer", "FixedPatchTokenizer"]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(math.gcd(8, channels), channels)
    if kind == "batch":
        return nn.BatchNorm1d(channels)
    raise ValueError(
        f"Invalid value for the 'norm' parameter: expected one of ['group', 'batch'], got {kind!r}."
    )


class AdaptiveTokenizer(nn.Module):
    """Conv1d stack -> ``AdaptiveAvgPool1d(n_tokens)`` -> Linear to ``d_model``.

    Each conv block is ``Conv1d(kernel k, stride 1, 'same' padding) -> norm -> GELU``, so the
    feature map keeps the input length ``T`` and every one of the ``n_tokens`` pooled patches
    summarises ``T / n_tokens`` samples: 125 ms at both 128 Hz (T = 256) and 200 Hz (T = 400)
    for 2 s windows, which is what makes the tokens rate-consistent.

    Parameters
    ----------
    d_model : int
        Token width.
    n_tokens : int
        Number of pooled patches (16 in the paper).
    conv_channels : sequence of int
        Output channels of the conv layers (**our default** (32, 64, 128); not given in the paper).
    kernels : sequence of int
        Kernel sizes, one per conv layer (**our default** (7, 5, 3)).
    norm : {"group", "batch"}
        Normalisation after each conv. GroupNorm (default) keeps every channel's tokens
        independent of the rest of the batch; BatchNorm couples them in training mode.
    """

    def __init__(
        self,
        d_model: int = 128,
        n_tokens: int = 16,
        conv_channels: Sequence[int] = (32, 64, 128),
        kernels: Sequence[int] = (7, 5, 3),
        norm: str = "group",
    ):
        super().__init__()
        if len(conv_channels) != len(kernels) or not kernels:
            raise ValueError(
                f"AdaptiveTokenizer: 'conv_channels' {tuple(conv_channels)} and "
                f"'kernels' {tuple(kernels)} must be non-empty and of equal length."
            )
        if any(k % 2 == 0 for k in kernels):
            raise ValueError(
                f"AdaptiveTokenizer: 'kernels' must be odd ('same' padding), got {tuple(kernels)}."
            )
        layers: list[nn.Module] = []
        c_in = 1
        for c_out, k in zip(conv_channels, kernels):
            layers += [nn.Conv1d(c_in, c_out, k, padding=k // 2), _norm(norm, c_out), nn.GELU()]
            c_in = c_out
        self.convs = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool1d(n_tokens)
        self.proj = nn.Linear(c_in, d_model)
        self.n_tokens, self.d_model = n_tokens, d_model

    def num_tokens(self, n_times: int) -> int:
        """Number of tokens for a window of ``n_times`` samples (always ``n_tokens``)."""
        return self.n_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (N, T) -> tokens (N, n_tokens, d_model)."""
        f = self.convs(x[:, None, :])  # (N, c, T)
        f = self.pool(f)  # (N, c, n_tokens)
        return self.proj(f.transpose(1, 2))  # (N, n_tokens, d_model)


class FixedPatchTokenizer(nn.Module):
    """Non-overlapping fixed-length patches, each projected to ``d_model`` by one Linear.

    A window of ``T`` samples gives ``T // patch_size`` tokens when ``T`` is a multiple of
    ``patch_size`` (16 tokens for 256 samples at 128 Hz, 25 for 400 samples at 200 Hz: the
    patch covers 125 ms at 128 Hz but 80 ms at 200 Hz, the inconsistency the ART tokenizer
    removes).

    When ``T`` is not a multiple of ``patch_size`` the ``remainder`` parameter decides:

    - ``"pad"`` (default): the window is right-padded with zeros to the next multiple, giving
      ``ceil(T / patch_size)`` tokens; no sample is dropped and the last token is partly zeros;
    - ``"drop"``: the trailing ``T % patch_size`` samples are discarded
      (``floor(T / patch_size)`` tokens);
    - ``"error"``: a ``ValueError`` naming ``T`` and ``patch_size``.

    Parameters
    ----------
    d_model : int
        Token width.
    patch_size : int
        Samples per patch (16 in the paper's ablation).
    remainder : {"pad", "drop", "error"}
        See above.
    """

    def __init__(self, d_model: int = 128, patch_size: int = 16, remainder: str = "pad"):
        super().__init__()
        if remainder not in ("pad", "drop", "error"):
            raise ValueError(
                f"Invalid value for the 'remainder' parameter: expected one of "
                f"['pad', 'drop', 'error'], got {remainder!r}."
            )
        self.patch_size, self.remainder, self.d_model = patch_size, remainder, d_model
        self.proj = nn.Linear(patch_size, d_model)

    def num_tokens(self, n_times: int) -> int:
        """Number of tokens for a window of ``n_times`` samples."""
        p = self.patch_size
        if n_times % p and self.remainder == "error":
            raise ValueError(
                f"FixedPatchTokenizer: window length T={n_times} is not a multiple "
                f"of patch_size={p} (remainder='error')."
            )
        return -(-n_times // p) if self.remainder == "pad" else n_times // p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (N, T) -> tokens (N, n_patches, d_model)."""
        N, T = x.shape
        n, p = self.num_tokens(T), self.patch_size
        if n == 0:
            raise ValueError(
                f"FixedPatchTokenizer: window length T={T} is shorter than patch_size={p}."
            )
        if n * p > T:
            x = F.pad(x, (0, n * p - T))  # (N, n * p), zeros on the right
        patches = x[:, : n * p].reshape(N, n, p)  # (N, n, patch_size)
        return self.proj(patches)  # (N, n, d_model)
