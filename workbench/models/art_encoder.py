"""ART (Adaptive Resampling Transformer): One Model for All's univariate channel encoder.

Pre-trained on single channels with an instance contrastive objective
(``workbench.objectives.contrastive``); :class:`workbench.models.omfa.OMFAClassifier` runs it
over every channel of a window. Channel ids index the Unified Channel Schema (a
``workbench.channels.ChannelVocabulary``); rate ids index ``workbench.channels.SAMPLING_RATES``.

References
----------
.. [1] "One Model for All: Universal Pre-training for EEG based Emotion Recognition across
       Heterogeneous Datasets and Paradigms", Sections III-B and III-C.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from workbench.channels import SAMPLING_RATES
from workbench.models.layers.embeddings import AdaptiveTokenizer, FixedPatchTokenizer
from workbench.models.registry import register_model
from workbench.utils import check_option

logger = logging.getLogger("workbench")

__all__ = ["ARTEncoder", "ENCODER_FIELDS", "ART_PAPER", "ART_TINY"]

# ----------------------------------------------------------------------------- presets
ART_PAPER: dict[str, Any] = dict(
    d_model=128,
    n_tokens=16,
    n_layers=3,
    n_heads=8,
    ffn_dim=256,
    dropout=0.1,
    conv_channels=(32, 64, 128),
    kernels=(7, 5, 3),
)
# The tiny preset (smoke runs: a few hundred steps on a CPU) has no dropout inside the
# Transformers: nothing to regularise in such short runs, and dropout masks cost ~10 % of a
# CPU step. The paper-mandated head dropout (0.5) stays.
ART_TINY: dict[str, Any] = dict(
    d_model=32,
    n_tokens=16,
    n_layers=2,
    n_heads=4,
    ffn_dim=64,
    dropout=0.0,
    conv_channels=(8, 16, 16),
    kernels=(7, 5, 3),
)

ENCODER_FIELDS: tuple[str, ...] = (
    "d_model",
    "n_tokens",
    "n_layers",
    "n_heads",
    "ffn_dim",
    "dropout",
    "tokenizer",
    "conv_channels",
    "kernels",
    "norm",
    "patch_size",
    "remainder",
    "max_tokens",
    "n_channels",
    "n_rates",
    "input_scale",
)
"""Constructor arguments shared by ``art_encoder`` and ``omfa_classifier`` (same meaning): an
encoder pre-trained with some values loads into a classifier built with the same values."""


def _check_ids(name: str, ids: torch.Tensor, n: int, size: int) -> torch.Tensor:
    ids = ids.reshape(-1)
    if ids.numel() != n:
        raise ValueError(
            f"Invalid '{name}': expected {n} ids (one per channel), got shape {tuple(ids.shape)}."
        )
    # Range check on CPU only: on CUDA it would synchronise every step (the embedding asserts).
    if ids.device.type == "cpu" and n and (int(ids.min()) < 0 or int(ids.max()) >= size):
        raise ValueError(
            f"Invalid '{name}': ids must lie in [0, {size}), got min "
            f"{int(ids.min())}, max {int(ids.max())}; enlarge the vocabulary size "
            f"('n_channels' / 'n_rates')."
        )
    return ids


# ----------------------------------------------------------------------------- encoder
@register_model("art_encoder", presets={"tiny": ART_TINY, "paper": ART_PAPER})
class ARTEncoder(nn.Module):
    """ART (Adaptive Resampling Transformer): a univariate encoder of one EEG channel.

    ``tokens = tokenizer(x) + E_pos + E_chan[ch_id] + E_rate[rate_id]`` goes through a stack of
    post-norm Transformer encoder layers (``nn.TransformerEncoder``, whose attention runs on
    ``F.scaled_dot_product_attention``); the channel embedding is the mean over the tokens.

    Parameters
    ----------
    d_model : int
        Token width (128).
    n_tokens : int
        Tokens of the adaptive tokenizer (16).
    n_layers, n_heads, ffn_dim : int
        Transformer depth (3), heads (8) and feed-forward width (256).
    dropout : float
        Dropout inside the Transformer layers (**our default** 0.1).
    tokenizer : {"adaptive", "fixed"}
        The ART tokenizer or the Fixed-Patch ablation.
    conv_channels, kernels : sequence of int
        Conv stack of the adaptive tokenizer (**our default** (32, 64, 128) and (7, 5, 3)).
    norm : {"batch", "group"}
        Normalisation in the conv stack (**our default** BatchNorm: GroupNorm normalises each
        single-channel sequence on its own and so discards its absolute amplitude, the band
        power that emotion EEG is classified by; with GroupNorm the smoke fine-tuning did not fit).
    patch_size : int
        Samples per patch of the fixed tokenizer (16).
    remainder : {"pad", "drop", "error"}
        What the fixed tokenizer does when ``T`` is not a multiple of ``patch_size``.
    max_tokens : int
        Rows of ``E_pos`` for the fixed tokenizer, whose token count grows with ``T``.
    n_channels : int
        Size of the channel-embedding table (the UCS, 62 for SEED + DEAP).
    n_rates : int
        Size of the rate-embedding table (``len(SAMPLING_RATES)``).
    input_scale : float
        Factor applied to the raw input (e.g. ``1e6`` for windows stored in volts).

    Notes
    -----
    ``forward(x, ch_ids=None, rate_id=None, ch_mask=None)`` takes ``x`` (N, T) or (N, 1, T),
    ``ch_ids`` and ``rate_id`` with N ids each (any shape, e.g. (N, 1)); a missing id tensor
    leaves out that embedding. ``ch_mask`` is accepted for the common model signature and
    ignored (every row is one real channel). Returns ``{"tokens": (N, n, d_model),
    "embedding": (N, d_model)}``.

    References
    ----------
    .. [1] "One Model for All", Section III-D1.
    """

    n_chans = 1  # univariate: one channel per sample

    def __init__(
        self,
        d_model: int = 128,
        n_tokens: int = 16,
        n_layers: int = 3,
        n_heads: int = 8,
        ffn_dim: int = 256,
        dropout: float = 0.1,
        tokenizer: str = "adaptive",
        conv_channels: Sequence[int] = (32, 64, 128),
        kernels: Sequence[int] = (7, 5, 3),
        norm: str = "batch",
        patch_size: int = 16,
        remainder: str = "pad",
        max_tokens: int = 128,
        n_channels: int = 62,
        n_rates: int = len(SAMPLING_RATES),
        input_scale: float = 1.0,
    ):
        super().__init__()
        check_option("tokenizer", tokenizer, ["adaptive", "fixed"])
        self.config = {k: v for k, v in locals().items() if k in ENCODER_FIELDS}
        self.d_model, self.input_scale = d_model, input_scale
        if tokenizer == "adaptive":
            self.tokenizer: nn.Module = AdaptiveTokenizer(
                d_model, n_tokens, conv_channels, kernels, norm
            )
            n_pos = n_tokens
        else:
            self.tokenizer = FixedPatchTokenizer(d_model, patch_size, remainder)
            n_pos = max_tokens
        self.pos_embed = nn.Parameter(torch.zeros(n_pos, d_model))  # E_pos
        self.chan_embed = nn.Embedding(n_channels, d_model)  # E_chan over the UCS
        self.rate_embed = nn.Embedding(n_rates, d_model)  # E_rate
        for t in (self.pos_embed, self.chan_embed.weight, self.rate_embed.weight):
            nn.init.normal_(t, std=0.02)
        layer = nn.TransformerEncoderLayer(
            d_model,
            n_heads,
            ffn_dim,
            dropout,
            activation="gelu",
            batch_first=True,
            norm_first=False,
        )
        self.transformer = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)

    def embed_tokens(
        self,
        x: torch.Tensor,
        ch_ids: torch.Tensor | None = None,
        rate_id: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The Transformer input ``x_in`` (N, n, d_model) for ``x`` (N, T)."""
        N, T = x.shape
        if self.input_scale != 1.0:
            x = x * self.input_scale
        tok = self.tokenizer(x)  # (N, n, d)
        n = tok.shape[1]
        if n > self.pos_embed.shape[0]:
            raise ValueError(
                f"ARTEncoder: a window of T={T} samples gives {n} tokens but "
                f"E_pos has {self.pos_embed.shape[0]} rows; raise 'max_tokens'."
            )
        tok = tok + self.pos_embed[:n]
        if ch_ids is not None:
            ids = _check_ids("ch_ids", ch_ids, N, self.chan_embed.num_embeddings)
            tok = tok + self.chan_embed(ids)[:, None, :]  # broadcast over the n tokens
        if rate_id is not None:
            ids = _check_ids("rate_id", rate_id, N, self.rate_embed.num_embeddings)
            tok = tok + self.rate_embed(ids)[:, None, :]
        return tok

    def forward(
        self,
        x: torch.Tensor,
        ch_ids: torch.Tensor | None = None,
        rate_id: torch.Tensor | None = None,
        ch_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        if x.dim() == 3:
            if x.shape[1] != 1:
                raise ValueError(
                    f"ARTEncoder takes single channels: expected x of shape (N, T) "
                    f"or (N, 1, T), got {tuple(x.shape)}; use 'omfa_classifier' "
                    "for multichannel windows."
                )
            x = x[:, 0]  # (N, T)
        elif x.dim() != 2:
            raise ValueError(
                f"ARTEncoder: expected x of shape (N, T) or (N, 1, T), got {tuple(x.shape)}."
            )
        tok = self.transformer(self.embed_tokens(x, ch_ids, rate_id))  # (N, n, d)
        return {"tokens": tok, "embedding": tok.mean(dim=1)}
