"""EEGM2: a U-shaped encoder-decoder with Mamba-2 blocks, pre-trained by reconstruction.

Layout (widths ``w1, w2, w3`` = 64, 128, 256 in the paper; ``T`` samples, ``C`` channels)::

    x (B, C, T)
    input_embedding  Conv1d k=1, 3, 7 in parallel -> concat -> 1x1 Conv1d -> (B, w1, T)
    encoder1         Linear(w1, w1) + block(w1)                   x1 (B, w1, T)    -> MaxPool(2)
    encoder2         Conv1d(w1 -> w2, k=3)                        x2 (B, w2, T/2)  -> MaxPool(2)
    encoder3         Conv1d(w2 -> w3, k=3)                        x3 (B, w3, T/4)  -> MaxPool(2)
    mediator         Linear + block(w3) + Linear                  tokens (B, T/8, w3)
    decoder3         upsample to T/4, concat x3, Conv1d(2 w3 -> w3) + block(w3)
    decoder2         upsample to T/2, concat x2, Conv1d(w2 + w3 -> w2) + block(w2)
    decoder1         upsample to T,   concat x1, Conv1d(w1 + w2 -> w1)
    output           Conv1d(w1 -> C, k=1)                         recon (B, C, T)

A block is ``x + LayerNorm(Mamba2(x))`` (``d_state=16, d_conv=2, expand=8, headdim=64``);
upsampling is parameter-free linear interpolation. With 16 channels the paper preset has
4,565,144 parameters and the encoder alone (EEGM2 Light) 254,392.

Ablations (plain keyword arguments; ``EEGM2_VARIANTS`` lists each one's model and loss switches):

====  ========================================================================
S1    single Conv1d (k=3) input embedding instead of the multi-scale one
S2    L1 loss only (the model is unchanged; see ``EEGM2_VARIANTS["s2"]["loss"]``)
S3    Mamba-1 blocks instead of Mamba-2
S4    Mamba-1 blocks and the single-conv embedding
S5    Transformer blocks (4-head self-attention + LayerNorm + residual)
====  ========================================================================

References
----------
.. [1] J. Hong, G. Mackellar and S. Ghane, "EEGM2: An efficient mamba-2-based self-supervised
   framework for long-sequence EEG modeling", arXiv:2502.17873, 2025.
.. [2] T. Dao and A. Gu, "Transformers are SSMs", ICML 2024, arXiv:2405.21060.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from workbench.models.layers.heads import ChannelAdapter
from workbench.models.layers.ssm import Mamba1, Mamba2
from workbench.models.registry import register_model
from workbench.utils import check_option

logger = logging.getLogger("workbench")

__all__ = ["EEGM2", "EEGM2_PRESETS", "EEGM2_VARIANTS", "EEGM2Block", "eegm2_variant"]

BLOCKS = ("mamba2", "mamba1", "transformer")

#: Ablation table: model keyword arguments and loss keyword arguments (for
#: ``workbench.objectives.ReconstructionObjective``) of every variant.
EEGM2_VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "eegm2": {"model": {}, "loss": {"l1_weight": 1.0, "spectral_weight": 1.0}},
    "s1": {"model": {"multiscale": False}, "loss": {"l1_weight": 1.0, "spectral_weight": 1.0}},
    "s2": {"model": {}, "loss": {"l1_weight": 1.0, "spectral_weight": 0.0}},
    "s3": {"model": {"block": "mamba1"}, "loss": {"l1_weight": 1.0, "spectral_weight": 1.0}},
    "s4": {"model": {"block": "mamba1", "multiscale": False},
           "loss": {"l1_weight": 1.0, "spectral_weight": 1.0}},
    "s5": {"model": {"block": "transformer"}, "loss": {"l1_weight": 1.0, "spectral_weight": 1.0}},
    "light": {"model": {"encoder_only": True}, "loss": {}},
}

EEGM2_PRESETS: dict[str, dict[str, Any]] = {
    # Authors' configuration (16 channels: 4,565,144 parameters).
    "paper": {"n_chans": 16, "widths": (64, 128, 256), "d_state": 16, "d_conv": 2, "expand": 8,
              "headdim": 64, "chunk_size": 256, "attn_heads": 4, "attn_dropout": 0.1},
    # Same structure, small enough for CPU tests.
    "tiny": {"n_chans": 16, "widths": (16, 32, 64), "d_state": 8, "d_conv": 2, "expand": 2,
             "headdim": 16, "chunk_size": 32, "attn_heads": 4, "attn_dropout": 0.0},
}


def eegm2_variant(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(model_kwargs, loss_kwargs)`` of an ablation variant (copies; see ``EEGM2_VARIANTS``)."""
    check_option("variant", name, EEGM2_VARIANTS)
    v = EEGM2_VARIANTS[name]
    return dict(v["model"]), dict(v["loss"])


class MultiScaleEmbedding(nn.Module):
    """Parallel Conv1d with kernels 1, 3 and 7 (same padding), fused by a 1x1 Conv1d."""

    def __init__(self, n_chans: int, width: int, kernels: tuple[int, ...] = (1, 3, 7)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv1d(n_chans, width, k, padding=k // 2)
                                      for k in kernels)
        self.fuse = nn.Conv1d(len(kernels) * width, width, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T) -> (B, width, T)
        return self.fuse(torch.cat([branch(x) for branch in self.branches], dim=1))


class SelfAttentionMixer(nn.Module):
    """Multi-head self-attention over time with the softmax matrix materialised (as the S5
    ablation: ``nn.MultiheadAttention`` returning its weights), so memory grows as ``T^2``."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, d) -> (B, T, d)
        return self.attn(x, x, x, need_weights=True)[0]


class EEGM2Block(nn.Module):
    """Sequence block on (B, T, d).

    Mamba blocks: ``x + LayerNorm(mixer(x))``; Transformer block (S5): ``LayerNorm(x +
    attention(x))``, both as in the authors' code.
    """

    def __init__(self, d_model: int, block: str = "mamba2", d_state: int = 16, d_conv: int = 2,
                 expand: int = 8, headdim: int = 64, chunk_size: int = 256, attn_heads: int = 4,
                 attn_dropout: float = 0.1, backend: str = "auto") -> None:
        super().__init__()
        self.block = check_option("block", block, BLOCKS)
        if block == "mamba2":
            self.mixer = Mamba2(d_model, d_state=d_state, d_conv=d_conv, expand=expand,
                                headdim=headdim, chunk_size=chunk_size, backend=backend)
        elif block == "mamba1":
            self.mixer = Mamba1(d_model, d_state=d_state, d_conv=d_conv, expand=expand,
                                backend=backend)
        else:
            self.mixer = SelfAttentionMixer(d_model, attn_heads, attn_dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        if self.block == "transformer":
            return self.norm(x + self.mixer(x))
        return x + self.norm(self.mixer(x))


@register_model("eegm2", presets=EEGM2_PRESETS)
class EEGM2(nn.Module):
    """EEGM2 reconstruction model (and its encoder-only Light form and ablations).

    Parameters
    ----------
    n_chans : int
        EEG channels ``C`` (input and reconstruction).
    widths : tuple of int
        Feature widths of the three encoder stages (64, 128, 256 in the paper).
    d_state, d_conv, expand, headdim, chunk_size : int
        Mamba-2 settings of every block (16, 2, 8, 64, 256 in the paper); Mamba-1 blocks use
        ``d_state``, ``d_conv`` and ``expand``.
    block : {"mamba2", "mamba1", "transformer"}
        Sequence block (S3/S4: ``"mamba1"``, S5: ``"transformer"``).
    multiscale : bool
        Multi-scale (k = 1, 3, 7) input embedding; ``False`` is a single k=3 Conv1d (S1/S4).
    decoder : bool
        Build the decoder (``recon``); a classifier (EEGM2 Fine) reads the mediator's tokens
        and leaves it out, so no parameter goes without a gradient.
    encoder_only : bool
        EEGM2 (Light): embedding and the three encoder stages only, no ``recon``. Its parameter
        names are a subset of the full model's, so ``light.load_state_dict(full.state_dict(),
        strict=False)`` transfers a pre-trained encoder (see :meth:`to_light`).
    attn_heads, attn_dropout
        Transformer block settings (S5: 4 heads, dropout 0.1).
    n_outputs : int, optional
        When given, a head on the pooled embedding returns ``logits`` (fine-tuning).
    in_chans : int, optional
        Input channels of a dataset whose layout differs from the ``n_chans`` the model was
        pre-trained on: a learnable 1x1 convolution (``adapter``) maps them first.
    head : {"mlp", "linear"}
        That head: an MLP with one hidden layer of ``head_hidden`` units, or one Linear layer.
    head_hidden : int
        Hidden width of the MLP head.
    backend : {"auto", "torch", "cuda"}
        Mamba kernels (see :class:`workbench.models.layers.ssm.Mamba2`).
    n_times, sfreq
        Accepted for the common model signature; the model works for any length >= 1.

    Notes
    -----
    ``forward(x)`` returns ``recon`` (B, C, T), ``tokens`` (the mediator output, (B, T', w3)
    with ``T' = ceil(T / 8)``), ``embedding`` (tokens averaged over time, (B, w3)) and, with a
    head, ``logits``. Lengths that are not a multiple of 8 are zero-padded on the right before
    the three poolings and the reconstruction is cropped back to ``T``.

    References
    ----------
    .. [1] J. Hong, G. Mackellar and S. Ghane, "EEGM2: An efficient mamba-2-based
       self-supervised framework for long-sequence EEG modeling", arXiv:2502.17873, 2025.
    """

    n_stages = 3

    def __init__(self, n_chans: int = 16, widths: tuple[int, int, int] = (64, 128, 256),
                 d_state: int = 16, d_conv: int = 2, expand: int = 8, headdim: int = 64,
                 chunk_size: int = 256, block: str = "mamba2", multiscale: bool = True,
                 encoder_only: bool = False, decoder: bool = True, attn_heads: int = 4,
                 attn_dropout: float = 0.1,
                 n_outputs: int | None = None, head: str = "mlp", head_hidden: int = 64,
                 in_chans: int | None = None, backend: str = "auto", n_times: int | None = None,
                 sfreq: float | None = None) -> None:
        super().__init__()
        check_option("block", block, BLOCKS)
        check_option("head", head, ("mlp", "linear"))
        if len(widths) != 3:
            raise ValueError(f"Invalid value for the 'widths' parameter: expected three stage "
                             f"widths, got {widths!r}.")
        w1, w2, w3 = (int(w) for w in widths)
        self.n_chans, self.widths, self.block = n_chans, (w1, w2, w3), block
        self.multiscale, self.encoder_only = multiscale, encoder_only
        self.decoder = decoder and not encoder_only
        # Which channels the input rows are (ids into the run's ChannelVocabulary, -1 unknown):
        # saved with the weights, so a classifier knows the pre-training layout.
        self.register_buffer("input_ch_ids", torch.full((n_chans,), -1, dtype=torch.int64))
        # A dataset of another layout: a learnable 1x1 convolution to the n_chans inputs.
        self.adapter = ChannelAdapter(in_chans, n_chans) if in_chans is not None else None
        self.n_times, self.sfreq = n_times, sfreq
        self._config = dict(n_chans=n_chans, widths=(w1, w2, w3), d_state=d_state,
                            d_conv=d_conv, expand=expand, headdim=headdim,
                            chunk_size=chunk_size, block=block, multiscale=multiscale,
                            attn_heads=attn_heads, attn_dropout=attn_dropout, backend=backend,
                            in_chans=in_chans)
        blk = dict(block=block, d_state=d_state, d_conv=d_conv, expand=expand, headdim=headdim,
                   chunk_size=chunk_size, attn_heads=attn_heads, attn_dropout=attn_dropout,
                   backend=backend)

        self.input_embedding = (MultiScaleEmbedding(n_chans, w1) if multiscale
                                else nn.Conv1d(n_chans, w1, kernel_size=3, padding=1))
        self.encoder1 = nn.Sequential(nn.Linear(w1, w1), EEGM2Block(w1, **blk))  # on (B, T, d)
        self.encoder2 = nn.Conv1d(w1, w2, kernel_size=3, padding=1)
        self.encoder3 = nn.Conv1d(w2, w3, kernel_size=3, padding=1)
        self.pool = nn.MaxPool1d(kernel_size=2, stride=2)
        if not encoder_only:
            self.mediator = nn.Sequential(nn.Linear(w3, w3), EEGM2Block(w3, **blk),
                                          nn.Linear(w3, w3))
        if self.decoder:
            self.decoder3 = nn.Conv1d(2 * w3, w3, kernel_size=3, padding=1)
            self.decoder3_block = EEGM2Block(w3, **blk)
            self.decoder2 = nn.Conv1d(w2 + w3, w2, kernel_size=3, padding=1)
            self.decoder2_block = EEGM2Block(w2, **blk)
            self.decoder1 = nn.Conv1d(w1 + w2, w1, kernel_size=3, padding=1)
            self.output = nn.Conv1d(w1, n_chans, kernel_size=1)
        if n_outputs is None:
            self.head = None
        elif head == "linear":
            self.head = nn.Linear(w3, n_outputs)
        else:
            self.head = nn.Sequential(nn.Linear(w3, head_hidden), nn.GELU(),
                                      nn.Linear(head_hidden, n_outputs))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Encoder features ``x1`` (B, w1, T), ``x2`` (B, w2, T/2), ``x3`` (B, w3, T/4) and the
        pooled ``x3`` (B, w3, T/8); ``T`` a multiple of 8."""
        h = self.input_embedding(x).transpose(1, 2)  # (B, T, w1)
        x1 = self.encoder1(h).transpose(1, 2)  # (B, w1, T)
        x2 = self.encoder2(self.pool(x1))  # (B, w2, T/2)
        x3 = self.encoder3(self.pool(x2))  # (B, w3, T/4)
        return x1, x2, x3, self.pool(x3)  # last: (B, w3, T/8)

    def forward(self, x: Tensor, ch_mask: Tensor | None = None, **unused: Any
                ) -> dict[str, Tensor]:
        """``x`` (B, C, T) -> dict with ``recon``, ``tokens``, ``embedding`` (and ``logits``).

        Other batch entries (``ch_ids``, ``rate_id``) are accepted and ignored; ``ch_mask``
        zeroes padding channels before the channel adapter.
        """
        n_in = self.adapter.n_in if self.adapter is not None else self.n_chans
        if x.dim() != 3 or x.shape[1] != n_in:
            raise ValueError(f"Invalid input shape for EEGM2: expected (batch, {n_in}, "
                             f"time), got {tuple(x.shape)}.")
        if self.adapter is not None:
            x = self.adapter(x, ch_mask)  # (B, n_chans, T)
        T = x.shape[-1]
        pad = (-T) % 2 ** self.n_stages
        if pad:
            x = F.pad(x, (0, pad))  # (B, C, T + pad)
        x1, x2, x3, x3p = self.encode(x)
        if self.encoder_only:
            tokens = x3p.transpose(1, 2)  # (B, T/8, w3)
            out = {"tokens": tokens, "embedding": tokens.mean(1)}
        elif not self.decoder:
            tokens = self.mediator(x3p.transpose(1, 2))  # (B, T/8, w3)
            out = {"tokens": tokens, "embedding": tokens.mean(1)}
        else:
            tokens = self.mediator(x3p.transpose(1, 2))  # (B, T/8, w3)
            d = F.interpolate(tokens.transpose(1, 2), size=x3.shape[-1], mode="linear",
                              align_corners=False)  # (B, w3, T/4)
            d = self.decoder3(torch.cat([x3, d], dim=1)).transpose(1, 2)  # (B, T/4, w3)
            d = self.decoder3_block(d).transpose(1, 2)  # (B, w3, T/4)
            d = F.interpolate(d, size=x2.shape[-1], mode="linear", align_corners=False)
            d = self.decoder2(torch.cat([x2, d], dim=1)).transpose(1, 2)  # (B, T/2, w2)
            d = self.decoder2_block(d).transpose(1, 2)  # (B, w2, T/2)
            d = F.interpolate(d, size=x1.shape[-1], mode="linear", align_corners=False)
            d = self.decoder1(torch.cat([x1, d], dim=1))  # (B, w1, T)
            recon = self.output(d)[..., :T]  # (B, C, T)
            out = {"recon": recon, "tokens": tokens, "embedding": tokens.mean(1)}
        if self.head is not None:
            out["logits"] = self.head(out["embedding"])
        return out

    def to_light(self) -> EEGM2:
        """An encoder-only copy (EEGM2 Light) carrying this model's encoder weights."""
        light = EEGM2(**{**self._config, "encoder_only": True})
        missing, unexpected = light.load_state_dict(copy.deepcopy(self.state_dict()),
                                                    strict=False)
        if missing:
            raise RuntimeError(f"EEGM2.to_light: encoder weights missing from the model: "
                               f"{missing}.")
        return light.to(next(self.parameters()).device)
