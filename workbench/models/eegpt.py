"""EEGPT (Yue et al.): electrode-wise autoregressive pre-training and a task-shared electrode graph.

Pre-training model ``eegpt`` (:class:`EEGPT`): the Electrode Temporal Encoder (ETE,
:class:`ElectrodeTemporalEncoder`, in :mod:`workbench.models.eegpt_encoder`) reads every electrode of a window as its own sequence of
1 s tokens; a token is the electrode's label embedding **concatenated** with the embedding of
that second's samples (not added). A decoder-only Transformer (pre-norm, SwiGLU, RoPE, causal
attention) runs over each electrode's tokens; all electrodes of a batch go through it in one call
as ``B * C`` independent sequences (padding electrodes are skipped). A linear predictor maps each
output token to the samples of the next second (``workbench.objectives.autoregressive``,
next-token MSE). ``mode="mae"`` is the paper's comparison: the same backbone with bidirectional
attention, a learned mask token and reconstruction of the masked seconds.

Classifier ``eegpt_classifier`` (:class:`EEGPTClassifier`): the ETE ``encoder``, then the
Task-shared Electrode Graph (TEG) on the last ETE token of every electrode, pooled over the
electrodes, then a ``head``. TEG is one graph-attention layer over the real electrodes::

    e_mn = LeakyReLU(b^T [W h_m || W h_n]),  alpha_mn = softmax_n(e_mn),  h'_m = sum_n alpha_mn W h_n

(:class:`~workbench.models.layers.graph.GATLayer` with one head, no bias, no activation computes
exactly this). ``W`` and ``b`` belong to the shared backbone: in multi-task fine-tuning every task
gets its own head on ``embedding`` (the pooled TEG output).

The deck's tables are images, so sizes are **our defaults** (config fields): ``paper`` = ``base``
= 12 layers, width 512, 8 heads; ``tiny`` = 2 layers, width 64; the ladder ``xs < s < m < l``
(CPU) and ``small < base < large`` (GPU) serves the scaling study (``workbench.analysis.scaling``).
The deck leaves open the signal-to-token map (**our default**: one Linear on the raw samples),
the positional encoding (``pos="rope" | "none"``) and the pooling (**our default** mean;
``pool="attention"`` as an option).

References
----------
.. [1] Yue, T. et al. (2024). EEGPT: Unleashing the Potential of EEG Generalist Foundation Model
       by Autoregressive Pre-training. arXiv:2410.19779 (v2: BrainGPT). Sections 3 (ETE, TEG).
.. [2] Velickovic, P. et al. (2018). Graph Attention Networks. ICLR.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from workbench.models.eegpt_encoder import (
    ENCODER_FIELDS,
    ElectrodeTemporalEncoder,
    _real_rows,
    _scatter_rows,
    masked_electrode_mean,
)
from workbench.models.layers.graph import GATLayer
from workbench.models.registry import register_model
from workbench.models.transfer import load_encoder_state
from workbench.utils import check_option

logger = logging.getLogger("workbench")

__all__ = ["EEGPT", "EEGPTClassifier", "EEGPT_SIZES", "ENCODER_FIELDS", "ElectrodePool",
           "ElectrodeTemporalEncoder", "load_pretrained_encoder", "make_head",
           "masked_electrode_mean"]

# ----------------------------------------------------------------------------- presets
_COMMON: dict[str, Any] = dict(token_len=200, token_s=1.0, dropout=0.0, ffn_dim=None)
EEGPT_SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(d_model=64, n_layers=2, n_heads=4, label_dim=16),  # smoke runs, tests
    # scaling ladder, each pre-trains a few epochs on a CPU in seconds
    "xs": dict(d_model=32, n_layers=1, n_heads=2, label_dim=8),
    "s": dict(d_model=48, n_layers=2, n_heads=4, label_dim=12),
    "m": dict(d_model=64, n_layers=3, n_heads=4, label_dim=16),
    "l": dict(d_model=96, n_layers=4, n_heads=4, label_dim=24),
    # GPU sizes; base = paper
    "small": dict(d_model=256, n_layers=6, n_heads=8, label_dim=64),
    "base": dict(d_model=512, n_layers=12, n_heads=8, label_dim=128),
    "paper": dict(d_model=512, n_layers=12, n_heads=8, label_dim=128),
    "large": dict(d_model=1024, n_layers=24, n_heads=16, label_dim=256),
}
"""Encoder sizes of every preset (**our defaults**; the deck's Table 1 is an image)."""
_PRESETS = {k: {**_COMMON, **v} for k, v in EEGPT_SIZES.items()}

# ----------------------------------------------------------------------------- pre-training
@register_model("eegpt", presets=_PRESETS)
class EEGPT(nn.Module):
    """ETE + a linear next-second predictor: the EEGPT pre-training model.

    Parameters
    ----------
    mask_ratio : float
        Share of tokens masked per electrode in ``mode="mae"`` (**our default** 0.5); read by
        :class:`~workbench.objectives.autoregressive.AutoregressiveObjective`.
    **encoder_fields
        The :data:`ENCODER_FIELDS` of :class:`ElectrodeTemporalEncoder` (``mode`` included).

    Notes
    -----
    ``forward(x, ch_ids, rate_id, ch_mask, n_tokens=None, token_mask=None)`` returns

    - ``pred`` (B, C, N, token_len): in ``mode="ar"`` ``pred[:, :, t]`` is the forecast of
      second ``t + 1`` from the seconds ``<= t``; in ``mode="mae"`` the reconstruction of
      second ``t`` (of interest where ``token_mask`` (B, C, N) is True);
    - ``patches`` (B, C, N, token_len): the seconds the model read (the targets);
    - ``tokens`` (B, C, N, d_model): ETE outputs;
    - ``embedding`` (B, d_model): the last token of every electrode, mean-pooled over the real
      electrodes (the deck's t-SNE representation).

    :meth:`generate` forecasts the next seconds with a key/value cache.

    References
    ----------
    .. [1] Yue, T. et al. (2024). arXiv:2410.19779, Section 3.1 (ETE) and the MAE comparison.
    """

    def __init__(self, mask_ratio: float = 0.5, **encoder_fields: Any):
        super().__init__()
        unknown = sorted(set(encoder_fields) - set(ENCODER_FIELDS))
        if unknown:
            raise TypeError(f"EEGPT got unknown argument(s) {unknown}; encoder arguments are "
                            f"{list(ENCODER_FIELDS)}.")
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"Invalid 'mask_ratio': expected a value in (0, 1), got {mask_ratio}.")
        self.encoder = ElectrodeTemporalEncoder(**encoder_fields)
        self.mode, self.mask_ratio = self.encoder.mode, mask_ratio
        self.predictor = nn.Linear(self.encoder.d_model, self.encoder.token_len)
        # The learned embedding that replaces a masked second's signal part (MAE mode only).
        self.mask_token = nn.Parameter(
            0.02 * torch.randn(self.encoder.d_model - self.encoder.label_dim)
        ) if self.mode == "mae" else None

    def forward(self, x: Tensor, ch_ids: Tensor | None = None, rate_id: Tensor | None = None,
                ch_mask: Tensor | None = None, n_tokens: int | None = None,
                token_mask: Tensor | None = None, impl: str | None = None) -> dict[str, Tensor]:
        if token_mask is not None and self.mode != "mae":
            raise ValueError("A 'token_mask' is only used with mode='mae'; this model has "
                             f"mode={self.mode!r}.")
        out = self.encoder(x, ch_ids, rate_id, ch_mask, n_tokens, token_mask, self.mask_token,
                           impl=impl)
        tokens = out["tokens"]  # (B, C, N, d)
        pred = self.predictor(tokens)  # (B, C, N, token_len)
        if ch_mask is not None:
            pred = pred.masked_fill(~ch_mask.to(torch.bool)[..., None, None], 0.0)
        return {"pred": pred, "patches": out["patches"], "tokens": tokens,
                "embedding": masked_electrode_mean(tokens[:, :, -1], ch_mask)}

    @torch.no_grad()
    def generate(self, x: Tensor, n_tokens: int, ch_ids: Tensor | None = None,
                 rate_id: Tensor | None = None, ch_mask: Tensor | None = None,
                 use_cache: bool = True, impl: str | None = None) -> Tensor:
        """Forecast the next ``n_tokens`` seconds of every electrode of ``x`` (B, C, T).

        Each forecast second is fed back as the next token (label embedding concatenated with
        its signal embedding). With ``use_cache`` the keys and values of the past tokens are
        kept (:class:`~workbench.models.layers.decoder.KVCache`) and each step runs one token;
        ``use_cache=False`` is the reference twin that re-runs the whole sequence at every step.
        Call ``model.eval()`` first when the model has dropout.

        Returns
        -------
        Tensor, shape (B, C, n_tokens * token_len)
            In the units of ``x`` (``input_scale`` undone) at ``token_len`` samples per token;
            zero for padding electrodes.
        """
        if self.mode != "ar":
            raise ValueError(f"generate needs a causal model (mode='ar'), got mode={self.mode!r}.")
        if n_tokens < 1:
            raise ValueError(f"Invalid 'n_tokens': expected >= 1, got {n_tokens}.")
        enc = self.encoder
        B, C, _ = x.shape
        patches = enc.tokenize(x, rate_id)  # (B, C, N, L)
        N, L = patches.shape[2], enc.token_len
        rows = patches.reshape(B * C, N, L)
        ids = None if ch_ids is None else ch_ids.reshape(B * C)
        keep = _real_rows(ch_mask, B, C)
        if keep is not None:
            rows, ids = rows[keep], None if ids is None else ids[keep]
        steps = []
        if use_cache:
            cache = enc.decoder.new_cache(rows.shape[0], N + n_tokens - 1, rows.dtype, rows.device)
            h = enc.encode_rows(rows, ids, cache=cache, impl=impl)  # (R, N, d): the prompt
            nxt = self.predictor(h[:, -1:])  # (R, 1, L)
            steps.append(nxt)
            for _ in range(n_tokens - 1):
                h = enc.encode_rows(nxt, ids, cache=cache, impl=impl)  # (R, 1, d): one token
                nxt = self.predictor(h)
                steps.append(nxt)
        else:
            seq = rows
            for _ in range(n_tokens):
                h = enc.encode_rows(seq, ids, impl=impl)  # (R, n, d): the whole sequence again
                nxt = self.predictor(h[:, -1:])  # (R, 1, L)
                steps.append(nxt)
                seq = torch.cat([seq, nxt], dim=1)
        out = _scatter_rows(torch.cat(steps, dim=1), keep, B * C)  # (B*C, n_tokens, L)
        return out.reshape(B, C, n_tokens * L) / enc.input_scale


# ----------------------------------------------------------------------------- classifier
class ElectrodePool(nn.Module):
    """Pooling over the real electrodes: ``"mean"`` (**our default**) or ``"attention"``
    (softmax of a learned linear score per electrode)."""

    def __init__(self, dim: int, kind: str = "mean"):
        super().__init__()
        self.kind = check_option("pool", kind, ["mean", "attention"])
        self.score = nn.Linear(dim, 1) if kind == "attention" else None

    def forward(self, h: Tensor, ch_mask: Tensor | None = None) -> Tensor:  # (B, C, F) -> (B, F)
        if self.score is None:
            return masked_electrode_mean(h, ch_mask)
        s = self.score(h).squeeze(-1)  # (B, C)
        if ch_mask is not None:
            s = s.masked_fill(~ch_mask.to(torch.bool), float("-inf"))
        return (torch.softmax(s, dim=1)[..., None] * h).sum(1)


def make_head(kind: str, dim: int, n_outputs: int, hidden: int | None = None,
              dropout: float = 0.0) -> nn.Module:
    """``"linear"``: Dropout + Linear; ``"mlp"``: Linear, GELU, Dropout, Linear."""
    check_option("head", kind, ["linear", "mlp"])
    if kind == "linear":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, n_outputs))
    hidden = hidden or dim
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(hidden, n_outputs))


@register_model("eegpt_classifier", presets=_PRESETS)
class EEGPTClassifier(nn.Module):
    """ETE ``encoder`` + Task-shared Electrode Graph + electrode pooling + ``head``.

    Parameters
    ----------
    n_outputs : int
        Classes of the head.
    n_chans : int or None
        Accepted for the common classifier signature and unused: the model reads any electrode
        set through ``ch_ids``, so one model serves datasets of different montages.
    head : {"linear", "mlp"}
        The task head; ``head_hidden`` (None: the embedding width) and ``head_dropout``
        (**our default** 0) shape it.
    graph_dim : int or None
        Width of ``W h`` in TEG (None: ``d_model``); the embedding width.
    graph_heads : int
        TEG attention heads (1: the single vector ``b`` of the paper; more are concatenated).
    graph_slope : float
        LeakyReLU slope of TEG (**our default** 0.2, the GAT value).
    graph_dropout : float
        Dropout on the TEG attention weights.
    pool : {"mean", "attention"}
        Pooling over electrodes (not stated in the paper; **our default** mean).
    mask_ratio : float, optional
        A pre-training field, accepted (so one override dict serves both models) and ignored.
    **encoder_fields
        The :data:`ENCODER_FIELDS` of :class:`ElectrodeTemporalEncoder`.

    Notes
    -----
    ``forward(x (B, C, T), ch_ids (B, C), rate_id (B,), ch_mask (B, C))`` returns ``logits``
    (B, n_outputs), ``embedding`` (B, graph_dim) (pooled TEG output, what the head reads),
    ``tokens`` (B, C, graph_dim) (TEG node outputs) and ``attention``: a one-element list with
    the TEG weights (B, graph_heads, C, C), zero to and from padding electrodes.

    References
    ----------
    .. [1] Yue, T. et al. (2024). arXiv:2410.19779, Section 3.2 (TEG, multi-task fine-tuning).
    .. [2] Velickovic, P. et al. (2018). Graph Attention Networks. ICLR.
    """

    def __init__(self, n_outputs: int = 2, n_chans: int | None = None, head: str = "linear",
                 head_hidden: int | None = None, head_dropout: float = 0.0,
                 graph_dim: int | None = None, graph_heads: int = 1, graph_slope: float = 0.2,
                 graph_dropout: float = 0.0, pool: str = "mean", mask_ratio: float | None = None,
                 **encoder_fields: Any):
        super().__init__()
        unknown = sorted(set(encoder_fields) - set(ENCODER_FIELDS))
        if unknown:
            raise TypeError(f"EEGPTClassifier got unknown argument(s) {unknown}; encoder "
                            f"arguments are {list(ENCODER_FIELDS)}.")
        self.n_chans = n_chans
        self.encoder = ElectrodeTemporalEncoder(**encoder_fields)
        graph_dim = graph_dim or self.encoder.d_model
        self.teg = GATLayer(self.encoder.d_model, graph_dim, graph_heads, concat=True,
                            dropout=graph_dropout, negative_slope=graph_slope,
                            activation="none", bias=False)
        self.pool = ElectrodePool(graph_dim, pool)
        self.head = make_head(head, graph_dim, n_outputs, head_hidden, head_dropout)

    def forward(self, x: Tensor, ch_ids: Tensor | None = None, rate_id: Tensor | None = None,
                ch_mask: Tensor | None = None, n_tokens: int | None = None) -> dict[str, Any]:
        tokens = self.encoder(x, ch_ids, rate_id, ch_mask, n_tokens)["tokens"]  # (B, C, N, d)
        h, alpha = self.teg(tokens[:, :, -1], ch_mask=ch_mask)  # (B, C, F), (B, heads, C, C)
        pooled = self.pool(h, ch_mask)  # (B, F)
        return {"logits": self.head(pooled), "embedding": pooled, "tokens": h,
                "attention": [alpha]}


# ----------------------------------------------------------------------------- weights
def load_pretrained_encoder(classifier: nn.Module, pretrain_state_dict: Mapping[str, Tensor]
                            ) -> dict[str, list[str]]:
    """Copy the ETE weights of a pre-trained ``eegpt`` into ``classifier.encoder``.

    Accepts the state dict of an :class:`EEGPT` or of a whole :class:`EEGPTClassifier` (their
    ``encoder.`` keys are used; the predictor and mask token are left out) or of a bare
    :class:`ElectrodeTemporalEncoder`, with or without DDP (``module.``) / ``torch.compile``
    (``_orig_mod.``) prefixes.

    Returns
    -------
    dict
        ``{"loaded": [...]}``, the encoder keys copied.

    Raises
    ------
    ValueError
        When keys are missing, unexpected or of another shape (the encoder was pre-trained with
        other sizes); the message lists them.
    """
    if not isinstance(getattr(classifier, "encoder", None), ElectrodeTemporalEncoder):
        raise ValueError(f"{type(classifier).__name__} has no ElectrodeTemporalEncoder "
                         "'encoder'; expected an EEGPTClassifier.")
    keys = load_encoder_state(classifier.encoder, pretrain_state_dict, what="ETE",
                              hint="pre-trained with another preset?")
    return {"loaded": keys}

