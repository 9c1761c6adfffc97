"""Task heads and the 1x1-convolution channel adapter, shared by the downstream classifiers.

- :func:`make_head` builds a ``"linear"`` head (``Dropout -> Linear``, the linear probe) or an
  ``"mlp"`` head (``Linear -> GELU -> Dropout -> Linear``) on a pooled embedding.
- :class:`ChannelAdapter` maps a dataset's ``n_in`` channels to the ``n_out`` channels an
  encoder was pre-trained on by a learnable 1x1 convolution over the channel axis (each output
  channel is a linear combination of the input channels at every sample), as STELAR and EEGPT
  do to reuse one montage-specific encoder on any montage.

References
----------
.. [1] V.-C. Nguyen et al., "Balanced latent semantics and signal fidelity for EEG
       representation learning" (STELAR), Section 3.1 and Appendix F (1x1 convolutional
       channel adapter, linear probing).
.. [2] G. Wang et al., "EEGPT: Pretrained transformer for universal and reliable
       representation of EEG signals", NeurIPS 2024 (linear channel adapter).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from workbench.channels import normalize_channel_names
from workbench.utils import check_option

__all__ = ["HEADS", "ChannelAdapter", "LinearHead", "MLPHead", "make_head"]

HEADS = ("linear", "mlp")


class LinearHead(nn.Module):
    """``Dropout -> Linear(in_features, n_outputs)``."""

    def __init__(self, in_features: int, n_outputs: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, n_outputs)

    def forward(self, x: Tensor) -> Tensor:  # (B, F) -> (B, n_outputs)
        return self.fc(self.drop(x))


class MLPHead(nn.Module):
    """``Linear(in, hidden) -> GELU -> Dropout -> Linear(hidden, n_outputs)``."""

    def __init__(self, in_features: int, n_outputs: int, hidden: int | None = None,
                 dropout: float = 0.0) -> None:
        super().__init__()
        hidden = int(hidden or in_features)
        self.fc1 = nn.Linear(in_features, hidden)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, n_outputs)

    def forward(self, x: Tensor) -> Tensor:  # (B, F) -> (B, n_outputs)
        return self.fc2(self.drop(self.act(self.fc1(x))))


def make_head(kind: str, in_features: int, n_outputs: int, hidden: int | None = None,
              dropout: float = 0.0) -> nn.Module:
    """A ``"linear"`` (:class:`LinearHead`) or ``"mlp"`` (:class:`MLPHead`) head.

    Parameters
    ----------
    kind : {"linear", "mlp"}
        Head type.
    in_features, n_outputs : int
        Embedding width and number of outputs (classes).
    hidden : int, optional
        Hidden width of the MLP head (default ``in_features``); unused by the linear head.
    dropout : float
        Dropout before the last Linear.
    """
    check_option("head", kind, HEADS)
    for name, v in (("in_features", in_features), ("n_outputs", n_outputs)):
        if int(v) < 1:
            raise ValueError(f"Invalid value for the '{name}' parameter: expected >= 1, "
                             f"got {v!r}.")
    if kind == "linear":
        return LinearHead(in_features, n_outputs, dropout)
    return MLPHead(in_features, n_outputs, hidden, dropout)


class ChannelAdapter(nn.Module):
    """Learnable 1x1 convolution from ``n_in`` dataset channels to ``n_out`` encoder channels.

    Parameters
    ----------
    n_in : int
        Channels of the dataset.
    n_out : int
        Channels the encoder expects (19 for STELAR).
    bias : bool
        Add a bias per output channel.

    Notes
    -----
    ``forward(x, ch_mask=None)`` maps ``x`` (B, n_in, T) to (B, n_out, T):
    ``y[b, o, t] = sum_i W[o, i] x[b, i, t] + bias[o]``. Padding channels (``ch_mask`` False)
    are zeroed first, so they never contribute. :meth:`from_names` starts from copying the
    channels the two montages share.
    """

    def __init__(self, n_in: int, n_out: int, bias: bool = True) -> None:
        super().__init__()
        for name, v in (("n_in", n_in), ("n_out", n_out)):
            if int(v) < 1:
                raise ValueError(f"Invalid value for the '{name}' parameter: expected >= 1, "
                                 f"got {v!r}.")
        self.n_in, self.n_out = int(n_in), int(n_out)
        self.conv = nn.Conv1d(self.n_in, self.n_out, kernel_size=1, bias=bias)

    @classmethod
    def from_names(cls, source: Sequence[str], target: Sequence[str],
                   bias: bool = True) -> ChannelAdapter:
        """An adapter initialised to copy every ``target`` channel that ``source`` also has
        (weight 1 on it, 0 elsewhere) and to average all source channels for the others."""
        src = normalize_channel_names(source, strict=False)
        tgt = normalize_channel_names(target, strict=False)
        adapter = cls(len(src), len(tgt), bias=bias)
        with torch.no_grad():
            w = torch.full((len(tgt), len(src)), 1.0 / len(src))  # (n_out, n_in)
            for o, name in enumerate(tgt):
                if name is not None and name in src:
                    w[o] = 0.0
                    w[o, src.index(name)] = 1.0
            adapter.conv.weight.copy_(w[:, :, None])
            if adapter.conv.bias is not None:
                adapter.conv.bias.zero_()
        return adapter

    def forward(self, x: Tensor, ch_mask: Tensor | None = None) -> Tensor:
        if x.dim() != 3 or x.shape[1] != self.n_in:
            raise ValueError(f"Invalid input shape for the channel adapter: expected (batch, "
                             f"{self.n_in}, time), got {tuple(x.shape)}.")
        if ch_mask is not None:
            x = x * ch_mask[:, :, None].to(x.dtype)  # (B, n_in, T): padding channels -> 0
        return self.conv(x)  # (B, n_out, T)
