"""Trace's patch encoder (time + spectral branches, gated fusion) and multi-scale channel PE.

:class:`TimeFrequencyPatchEncoder` maps every non-overlapping single-channel patch of
``patch_len`` samples to a ``d_model`` embedding:

- time branch: parallel Conv1d over the patch with kernels ``conv_kernels`` (3, 7, 15),
  concatenated, GroupNorm (one group per kernel branch), SiLU, flattened and projected;
- spectral branch: ``log(|rFFT(patch)| + eps)`` (``patch_len // 2 + 1`` bins) times a learnable
  spectral mask (initialised to ones), projected;
- fusion: ``g = sigmoid(W [e_time; e_freq])``, ``e = g * e_time + (1 - g) * e_freq``
  (``fusion="sum"``: ``e_time + e_freq``; ``branches="time"`` / ``"fft"``: one branch only).

:class:`MultiScaleChannelPE` adds depth-wise convolutions along the channel axis at every patch
step (kernels 3 and 7): ``e + sum_k DWConv_k(e)``. It sees only same-step channels, so it keeps
the model causal; channels are taken in the order given, padding channels count as zeros.

References
----------
.. [1] "Trace: Temporal Routing with Autoregressive Cross-channel Experts for EEG Representation
       Learning", Section 2.3, equations (2)-(8), and Table 6.
.. [2] Chu, X. et al. (2023). Conditional Positional Encodings for Vision Transformers. ICLR.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.utils import check_option

__all__ = ["MultiScaleChannelPE", "TimeFrequencyPatchEncoder"]


def _check_odd(name: str, kernels: Sequence[int]) -> tuple[int, ...]:
    kernels = tuple(int(k) for k in kernels)
    bad = [k for k in kernels if k < 1 or k % 2 == 0]
    if bad:
        raise ValueError(f"Invalid value for the '{name}' parameter: expected odd kernel sizes "
                         f">= 1 (same padding), got {kernels}.")
    return kernels


class TimeFrequencyPatchEncoder(nn.Module):
    """Embed single-channel patches ``(..., patch_len)`` into ``(..., d_model)``.

    Parameters
    ----------
    patch_len : int
        Samples per patch (200 = 1 s at 200 Hz in the paper).
    d_model : int
        Embedding width.
    conv_kernels : sequence of int
        Temporal kernels of the in-patch convolution branches (**our default** 3, 7, 15; odd).
    conv_filters : int
        Filters per branch (**our default** 16 paper, 4 tiny).
    conv_stride : int
        Stride of every branch (**our default** 4 paper, 8 tiny); the branch maps of
        ``ceil(patch_len / stride)`` positions are flattened and projected to ``d_model``.
    branches : {"both", "time", "fft"}
        Both branches (the paper) or the time-only / FFT-only ablations.
    fusion : {"gated", "sum"}
        Sigmoid-gated fusion (the paper) or the fixed-sum ablation.
    spectral_eps : float
        ``eps`` of the log-amplitude.

    References
    ----------
    .. [1] "Trace", Section 2.3, equations (2)-(6).
    """

    def __init__(self, patch_len: int, d_model: int, conv_kernels: Sequence[int] = (3, 7, 15),
                 conv_filters: int = 16, conv_stride: int = 4, branches: str = "both",
                 fusion: str = "gated", spectral_eps: float = 1e-6) -> None:
        super().__init__()
        check_option("branches", branches, ["both", "time", "fft"])
        check_option("fusion", fusion, ["gated", "sum"])
        if patch_len < 2:
            raise ValueError(f"Invalid value for the 'patch_len' parameter: expected >= 2 "
                             f"samples, got {patch_len}.")
        kernels = _check_odd("conv_kernels", conv_kernels)
        self.patch_len, self.branches, self.fusion = patch_len, branches, fusion
        self.spectral_eps, self.conv_stride = spectral_eps, conv_stride
        if branches in ("both", "time"):
            self.convs = nn.ModuleList(
                nn.Conv1d(1, conv_filters, k, stride=conv_stride, padding=k // 2) for k in kernels
            )
            n_out = (patch_len - 1) // conv_stride + 1  # same length for every odd kernel
            self.conv_norm = nn.GroupNorm(len(kernels), len(kernels) * conv_filters)
            self.act = nn.SiLU()
            self.time_proj = nn.Linear(len(kernels) * conv_filters * n_out, d_model)
        if branches in ("both", "fft"):
            n_bins = patch_len // 2 + 1
            self.spectral_mask = nn.Parameter(torch.ones(n_bins))  # learnable M, eq. (4)
            self.freq_proj = nn.Linear(n_bins, d_model)
        if branches == "both" and fusion == "gated":
            self.gate = nn.Linear(2 * d_model, d_model)

    def time_embedding(self, p: Tensor) -> Tensor:
        """Multi-scale convolution branch, ``p`` (M, patch_len) -> (M, d_model)."""
        # The branches run as one convolution: each kernel zero-padded (centred) to the widest
        # one gives the outputs of its own same-padded convolution, in one pass over the patches.
        kmax = max(conv.kernel_size[0] for conv in self.convs)
        weight = torch.cat([F.pad(conv.weight, ((kmax - conv.kernel_size[0]) // 2,) * 2)
                            for conv in self.convs])  # (K * F, 1, kmax)
        bias = torch.cat([conv.bias for conv in self.convs])  # (K * F,)
        h = F.conv1d(p[:, None, :], weight, bias, stride=self.conv_stride,
                     padding=kmax // 2)  # (M, K * F, L), branches concatenated in order
        h = self.act(self.conv_norm(h))
        return self.time_proj(h.flatten(1))  # (M, K * F * L) -> (M, d)

    def freq_embedding(self, p: Tensor) -> Tensor:
        """Spectral-mask branch, ``p`` (M, patch_len) -> (M, d_model)."""
        # FFTs in half precision are inaccurate (and refused for odd lengths): float32 here.
        amp = torch.fft.rfft(p.float(), dim=-1).abs()  # (M, P // 2 + 1)
        return self.freq_proj(torch.log(amp + self.spectral_eps) * self.spectral_mask)

    def time_embedding_ref(self, p: Tensor) -> Tensor:
        """Reference twin of :meth:`time_embedding`: one convolution per branch."""
        h = torch.cat([conv(p[:, None, :]) for conv in self.convs], dim=1)  # (M, K * F, L)
        return self.time_proj(self.act(self.conv_norm(h)).flatten(1))

    def forward(self, patches: Tensor) -> Tensor:
        """``patches`` (..., patch_len) -> embeddings (..., d_model)."""
        if patches.shape[-1] != self.patch_len:
            raise ValueError(f"TimeFrequencyPatchEncoder: expected patches of "
                             f"patch_len={self.patch_len} samples, got {patches.shape[-1]}.")
        lead = patches.shape[:-1]
        p = patches.reshape(-1, self.patch_len)  # (M, P): every patch on its own
        if self.branches == "time":
            e = self.time_embedding(p)
        elif self.branches == "fft":
            e = self.freq_embedding(p)
        else:
            e_t, e_f = self.time_embedding(p), self.freq_embedding(p)
            if self.fusion == "sum":
                e = e_t + e_f
            else:
                g = torch.sigmoid(self.gate(torch.cat([e_t, e_f], dim=-1)))  # eq. (5)
                e = g * e_t + (1 - g) * e_f  # eq. (6)
        return e.reshape(*lead, -1)


class MultiScaleChannelPE(nn.Module):
    """Multi-scale channel positional encoding: ``e + sum_k DWConv_k(e)`` along channels.

    Parameters
    ----------
    d_model : int
        Embedding width (one depth-wise filter per feature).
    kernels : sequence of int
        Channel kernels (**our default** 3 and 7; odd). ``()`` disables the encoding (the
        "w/o Channel PE" ablation), one kernel is the single-scale ablation.

    Notes
    -----
    ``forward(e (B, N, C, d), ch_mask (B, C) or None)``: the convolution runs along ``C`` at
    each of the ``N`` steps separately (time kernel 1), so step ``t`` uses only step ``t``.
    Padding channels (``ch_mask`` False) enter as zeros, like the zero padding at the ends.

    References
    ----------
    .. [1] "Trace", Section 2.3, equations (7)-(8).
    """

    def __init__(self, d_model: int, kernels: Sequence[int] = (3, 7)) -> None:
        super().__init__()
        self.kernels = _check_odd("chpe_kernels", kernels)
        self.convs = nn.ModuleList(
            nn.Conv1d(d_model, d_model, k, padding=k // 2, groups=d_model) for k in self.kernels
        )

    def forward(self, e: Tensor, ch_mask: Tensor | None = None) -> Tensor:
        if not self.kernels:
            return e
        B, N, C, d = e.shape
        if ch_mask is not None:
            e = e * ch_mask[:, None, :, None].to(e.dtype)  # padding channels -> zeros
        x = e.reshape(B * N, C, d).transpose(1, 2)  # (B*N, d, C): channels are the conv axis
        pe = sum(conv(x) for conv in self.convs)  # (B*N, d, C)
        return e + pe.transpose(1, 2).reshape(B, N, C, d)
