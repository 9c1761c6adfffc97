"""Patch embedding of multichannel EEG: a temporal-convolution branch plus an FFT branch.

A window ``x`` (B, C, T) is cut into ``P = T / patch_len`` non-overlapping patches per channel;
every patch (``patch_len`` samples) becomes one ``dim``-wide token:

- temporal branch: ``Conv1d(1, c, k, stride s) -> GroupNorm -> GELU`` then two
  ``Conv1d(c, c, 3) -> GroupNorm -> GELU`` blocks over the samples of the patch, flattened and
  projected to ``dim`` (the waveform shape);
- spectral branch: the magnitude of the patch's real FFT (``norm="forward"``, so magnitudes are
  amplitudes whatever ``patch_len``) through ``Linear -> GELU -> Linear`` (the oscillations);
- the two are summed.

References
----------
.. [1] V.-C. Nguyen et al., "Balanced latent semantics and signal fidelity for EEG
       representation learning" (STELAR), Section 2.1 (dual-branch embedder).
.. [2] W. Jiang, L. Zhao and B.-L. Lu, "Large brain model for learning generic representations
       with tremendous EEG data in BCI" (LaBraM), ICLR 2024 (temporal encoder).
.. [3] J. Wang et al., "CBraMod: A criss-cross brain foundation model for EEG decoding",
       arXiv:2412.07236 (temporal convolutions + spectral projection of each patch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.utils import check_option

__all__ = ["DualBranchPatchEmbed", "patchify", "unpatchify"]


def patchify(x: Tensor, patch_len: int) -> Tensor:
    """``x`` (B, C, T) -> patches (B, C, T / patch_len, patch_len).

    Raises ``ValueError`` naming ``T`` and ``patch_len`` when ``T`` is not a multiple of it.
    """
    if x.dim() != 3:
        raise ValueError(f"Invalid input shape: expected x of shape (batch, channels, time), "
                         f"got {tuple(x.shape)}.")
    B, C, T = x.shape
    if T % patch_len or T == 0:
        raise ValueError(f"Invalid window length: {T} samples is not a positive multiple of the "
                         f"patch length 'patch_len'={patch_len}; crop or pad the windows to "
                         f"k * {patch_len} samples.")
    return x.reshape(B, C, T // patch_len, patch_len)  # (B, C, P, patch_len)


def unpatchify(patches: Tensor) -> Tensor:
    """Patches (B, C, P, patch_len) -> signal (B, C, P * patch_len)."""
    B, C, P, L = patches.shape
    return patches.reshape(B, C, P * L)


class DualBranchPatchEmbed(nn.Module):
    """Temporal convolutions + FFT-MLP embedding of every patch.

    Parameters
    ----------
    patch_len : int
        Samples per patch (200 = 1 s at 200 Hz in the paper).
    dim : int
        Token width (64 in the paper).
    conv_channels : int
        Channels of the temporal convolutions (not given in the paper; the STELAR ``paper``
        preset uses CBraMod's 25).
    conv_kernel, conv_stride : int
        Kernel and stride of the first convolution (the STELAR ``paper`` preset: CBraMod's 49
        and 25); the two following convolutions have kernel 3, stride 1.
    norm_groups : int
        GroupNorm groups (must divide ``conv_channels``; CBraMod: 5).
    fft_hidden : int, optional
        Hidden width of the spectral MLP (default ``dim``).
    impl : {"matmul", "conv"}
        How the first convolution runs (settable attribute; same result, see ``_first_conv``).

    Notes
    -----
    ``forward(x, spectrum=None)`` takes (B, C, T) with ``T`` a multiple of ``patch_len`` (and
    optionally the precomputed :meth:`spectrum`) and returns tokens (B, C, P, dim). Every patch
    is embedded on its own (no mixing across patches or channels).
    """

    def __init__(self, patch_len: int = 200, dim: int = 64, conv_channels: int = 8,
                 conv_kernel: int = 15, conv_stride: int = 8, norm_groups: int = 4,
                 fft_hidden: int | None = None, impl: str = "matmul") -> None:
        super().__init__()
        self.impl = check_option("impl", impl, ["matmul", "conv"])
        for name, v in (("patch_len", patch_len), ("dim", dim), ("conv_channels", conv_channels),
                        ("conv_kernel", conv_kernel), ("conv_stride", conv_stride)):
            if int(v) < 1:
                raise ValueError(f"Invalid value for the '{name}' parameter: expected >= 1, "
                                 f"got {v!r}.")
        if conv_channels % norm_groups:
            raise ValueError(f"Invalid value for the 'norm_groups' parameter: it must divide "
                             f"conv_channels={conv_channels}, got {norm_groups}.")
        self.patch_len, self.dim = int(patch_len), int(dim)
        pad = conv_kernel // 2
        self.temporal = nn.Sequential(
            nn.Conv1d(1, conv_channels, conv_kernel, stride=conv_stride, padding=pad),
            nn.GroupNorm(norm_groups, conv_channels), nn.GELU(),
            nn.Conv1d(conv_channels, conv_channels, 3, padding=1),
            nn.GroupNorm(norm_groups, conv_channels), nn.GELU(),
            nn.Conv1d(conv_channels, conv_channels, 3, padding=1),
            nn.GroupNorm(norm_groups, conv_channels), nn.GELU(),
        )
        n_pos = (patch_len + 2 * pad - conv_kernel) // conv_stride + 1  # conv output length
        if n_pos < 1:
            raise ValueError(f"Invalid 'conv_kernel'={conv_kernel} for 'patch_len'={patch_len}: "
                             "the first convolution leaves no output sample.")
        self.temporal_proj = nn.Linear(conv_channels * n_pos, dim)
        n_bins = patch_len // 2 + 1
        hidden = int(fft_hidden or dim)
        self.spectral = nn.Sequential(nn.Linear(n_bins, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def spectrum(self, x: Tensor) -> Tensor:
        """Magnitude spectrum of every patch, (B, C, P, patch_len // 2 + 1) (no parameters, so
        two encoders of the same input can share it)."""
        patches = patchify(x, self.patch_len)  # (B, C, P, L)
        # FFT in float32 for half inputs: half-precision FFTs are unsupported or inaccurate.
        low = patches.dtype in (torch.float16, torch.bfloat16)
        return torch.fft.rfft(patches.float() if low else patches, dim=-1, norm="forward").abs()

    def _first_conv(self, flat: Tensor) -> Tensor:
        """First temporal convolution of (N, L) patches -> (N, c, n_pos).

        ``impl="matmul"``: the strided windows (``unfold``) times the kernel matrix, 2-3x
        faster on CPUs than ``Conv1d`` with one input channel; ``impl="conv"`` is the
        ``Conv1d`` itself (the reference twin).
        """
        conv = self.temporal[0]
        if self.impl == "conv":
            return conv(flat[:, None, :])
        k, s, pad = conv.kernel_size[0], conv.stride[0], conv.padding[0]
        win = F.pad(flat, (pad, pad)).unfold(-1, k, s)  # (N, n_pos, k), overlapping view
        N, n_pos = win.shape[:2]
        # One explicit copy into rows: matmul on the overlapping view may fall back to a
        # per-window batched product (thousands of small copies).
        out = F.linear(win.reshape(N * n_pos, k), conv.weight.flatten(1), conv.bias)
        return out.view(N, n_pos, -1).transpose(1, 2)  # (N, c, n_pos)

    def forward(self, x: Tensor, spectrum: Tensor | None = None) -> Tensor:
        patches = patchify(x, self.patch_len)  # (B, C, P, L)
        B, C, P, L = patches.shape
        h = self._first_conv(patches.reshape(B * C * P, L))  # (N, c, n_pos): each patch alone
        t = self.temporal[1:](h).flatten(1)  # (N, c * n_pos)
        t = self.temporal_proj(t).view(B, C, P, self.dim)  # (B, C, P, dim)
        mag = self.spectrum(x) if spectrum is None else spectrum  # (B, C, P, L/2+1)
        return t + self.spectral(mag)
