"""Trace: an autoregressive EEG encoder with temporal-routing mixture-of-experts blocks.

Layout (``B`` windows, ``C`` channels, ``T = N * patch_len`` samples)::

    x (B, C, T) * input_scale -> patches (B, C, N, P)
    TimeFrequencyPatchEncoder (conv branches + FFT branch, gated)   (B, N, C, d)
    + MultiScaleChannelPE (depth-wise convs along channels, per step)
    n_layers x TR-MoE block:  h += CSTA(RMSNorm(h));  h += CTR-FFN(RMSNorm(h))
    RMSNorm -> tokens (B, C, N, d); embedding = mean over real channels and steps (B, d)

Every output at step ``t`` depends on patches ``<= t`` only. ``trace`` adds one linear
forecasting head per horizon ``h`` (the next ``h`` patches from the state at ``t``) and is
trained with ``workbench.objectives.forecasting.ForecastingObjective``; ``trace_classifier``
puts a 3-layer MLP (or linear) head on the pooled embedding and loads the pre-trained encoder
with :func:`load_pretrained_encoder`. :meth:`TraceEncoder.stream` feeds a recording patch by
patch with cached keys/values and routing contexts. :data:`TRACE_ABLATIONS` names the
paper's ablations, each a set of constructor keywords.

Trace encodes electrode layout through the channel order (MS-ChPE): channel ids only put the
channels in the fixed spatial (10-05) order of the channel vocabulary (``channel_order="ids"``),
so one encoder takes any montage, padding channels (``ch_mask``) included. Rate ids are accepted
for the common signature and not used: Trace expects one sampling rate (the paper resamples to
200 Hz; ``patch_len`` is the number of samples of one patch at that rate).

References
----------
.. [1] "Trace: Temporal Routing with Autoregressive Cross-channel Experts for EEG Representation
       Learning", Section 2, Appendices D, E and G.
.. [2] Dai, D. et al. (2024). DeepSeekMoE. arXiv:2401.06066.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from workbench.models.layers.csta import CSTA
from workbench.models.layers.moe import CTRFFN, SwiGLU, dense_hidden
from workbench.models.layers.multiscale_patch import (
    MultiScaleChannelPE,
    TimeFrequencyPatchEncoder,
)
from workbench.models.layers.rope import RMSNorm
from workbench.models.registry import register_model
from workbench.models.transfer import load_encoder_state
from workbench.utils import check_option

logger = logging.getLogger("workbench")

__all__ = ["ENCODER_FIELDS", "TRACE_ABLATIONS", "TraceClassifier", "TraceEncoder", "TraceModel",
           "TraceStream", "load_pretrained_encoder"]

# ----------------------------------------------------------------------------- presets
_PAPER: dict[str, Any] = dict(
    patch_len=200, d_model=256, n_layers=8, n_heads=8, expert_hidden=512, n_experts=16,
    top_k=2, n_shared=1, n_queries=4, tf_heads=4, conv_kernels=(3, 7, 15), conv_filters=16,
    conv_stride=4, chpe_kernels=(3, 7), dropout=0.0,
)
# tiny: 8 experts (not 4) so a dataset's top-4 is a choice (the routing analysis's Jaccard)
_TINY: dict[str, Any] = dict(
    patch_len=200, d_model=32, n_layers=2, n_heads=2, expert_hidden=32, n_experts=8, top_k=2,
    n_shared=1, n_queries=4, tf_heads=2, conv_kernels=(3, 7, 15), conv_filters=4,
    conv_stride=8, chpe_kernels=(3, 7), dropout=0.0,
)

ENCODER_FIELDS: tuple[str, ...] = (
    "patch_len", "d_model", "n_layers", "n_heads", "n_kv_heads", "expert_hidden", "n_experts",
    "top_k", "n_shared", "ffn", "router", "n_queries", "tf_heads", "normalize_topk",
    "conv_kernels", "conv_filters", "conv_stride", "patch_branches", "fusion", "chpe_kernels",
    "rope_base", "norm_eps", "dropout", "input_scale", "channel_order", "impl",
)
"""Constructor arguments of :class:`TraceEncoder`, shared by ``trace`` and ``trace_classifier``."""

TRACE_ABLATIONS: dict[str, dict[str, dict[str, Any]]] = {
    "trace": {},
    "non_moe": {"model": {"ffn": "dense"}},
    "vanilla_moe": {"model": {"router": "token"}},
    "mean_temporal": {"model": {"router": "mean"}},
    "no_shared_expert": {"model": {"n_shared": 0}},
    "no_chpe": {"model": {"chpe_kernels": ()}},
    "chpe_k3": {"model": {"chpe_kernels": (3,)}},
    "chpe_k7": {"model": {"chpe_kernels": (7,)}},
    "queries_1": {"model": {"n_queries": 1}},
    "queries_2": {"model": {"n_queries": 2}},
    "horizons_1": {"pretrain": {"horizons": (1,)}},
    "horizons_1_2": {"pretrain": {"horizons": (1, 2)}},
    "patch_50": {"model": {"patch_len": 50}},
    "patch_100": {"model": {"patch_len": 100}},
    "patch_400": {"model": {"patch_len": 400}},
    "experts_8": {"model": {"n_experts": 8}},
    "top_1": {"model": {"top_k": 1}},
    "time_only": {"model": {"patch_branches": "time"}},
    "fft_only": {"model": {"patch_branches": "fft"}},
    "fixed_sum_fusion": {"model": {"fusion": "sum"}},
    "no_balance_loss": {"objective": {"balance_weight": 0.0}},
}
"""The paper's ablations: ``model`` keywords go to both ``trace`` and ``trace_classifier`` (the
encoder), ``pretrain`` keywords to ``trace`` only, ``objective`` keywords to
``ForecastingObjective``. Sizes of the expert-scaling and patch-length ablations are examples;
any value is one keyword."""


# ----------------------------------------------------------------------------- blocks
class TraceBlock(nn.Module):
    """TR-MoE block: ``h += CSTA(RMSNorm(h))``, ``h += FFN(RMSNorm(h))`` (eqs. 9-10); the FFN
    is a :class:`CTRFFN` or, for ``ffn="dense"``, a SwiGLU of the same active width."""

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int | None, expert_hidden: int,
                 n_experts: int, top_k: int, n_shared: int, ffn: str, router: str,
                 n_queries: int, tf_heads: int, normalize_topk: bool, rope_base: float,
                 norm_eps: float, dropout: float, impl: str) -> None:
        super().__init__()
        self.norm1, self.norm2 = RMSNorm(d_model, norm_eps), RMSNorm(d_model, norm_eps)
        self.attn = CSTA(d_model, n_heads, n_kv_heads, rope_base, impl)
        if ffn == "moe":
            self.ffn: nn.Module = CTRFFN(d_model, expert_hidden, n_experts, top_k, n_shared,
                                         router, n_queries, tf_heads, normalize_topk, impl)
        else:  # Non-MoE ablation: FLOPs-matched dense FFN
            self.ffn = SwiGLU(d_model, dense_hidden(expert_hidden, top_k, n_shared))
        self.drop = nn.Dropout(dropout)

    def _ffn(self, h: Tensor, ch_mask: Tensor | None, state: dict | None = None):
        if not isinstance(self.ffn, CTRFFN):
            return self.ffn(h), None
        return self.ffn(h, ch_mask) if state is None else self.ffn.step(h, state, ch_mask)

    def forward(self, h: Tensor, ch_mask: Tensor | None) -> tuple[Tensor, dict | None]:
        h = h + self.drop(self.attn(self.norm1(h), ch_mask))  # (B, N, C, d)
        f, info = self._ffn(self.norm2(h), ch_mask)
        return h + self.drop(f), info

    def step(self, h: Tensor, cache: dict, pos: int, ch_mask: Tensor | None
             ) -> tuple[Tensor, dict | None]:
        h = h + self.drop(self.attn.step(self.norm1(h), cache["attn"], pos, ch_mask))  # (B, C, d)
        f, info = self._ffn(self.norm2(h), ch_mask, cache["ffn"])
        return h + self.drop(f), info


def _routing_entry(info: dict) -> dict[str, Tensor]:
    return {k: info[k].detach() for k in ("experts", "weights", "probs")}


# ----------------------------------------------------------------------------- encoder
class TraceEncoder(nn.Module):
    """Trace encoder: patch encoder, MS-ChPE and ``n_layers`` TR-MoE blocks.

    Parameters
    ----------
    patch_len : int
        Samples per patch (200 = 1 s at 200 Hz); a window must hold a whole number of patches.
    d_model, n_layers, n_heads : int
        Width (256), depth (8) and attention heads (8) (**our default** sizes, Table 6 lost).
    n_kv_heads : int, optional
        Key/value heads of CSTA (default ``n_heads``).
    expert_hidden, n_experts, top_k, n_shared : int
        Expert width (512), specialised experts (16), active experts per step (2), shared
        experts (1; 0 = ablation).
    ffn : {"moe", "dense"}
        CTR-FFN, or the Non-MoE ablation (SwiGLU of width ``(top_k + n_shared) *
        expert_hidden``, the same active FLOPs).
    router : {"temporal", "mean", "token"}
        TemporalFormer (paper), Mean Temporal or Vanilla MoE (token-wise) routing.
    n_queries, tf_heads : int
        TemporalFormer queries (4) and heads.
    normalize_topk : bool
        Renormalise the chosen experts' probabilities (**our default** False).
    conv_kernels, conv_filters, conv_stride, patch_branches, fusion
        Patch encoder (see :class:`TimeFrequencyPatchEncoder`; ``patch_branches`` = its
        ``branches``: "both", "time", "fft"; ``fusion``: "gated", "sum").
    chpe_kernels : sequence of int
        Channel kernels of MS-ChPE ((3, 7); ``()`` = no channel PE).
    rope_base, norm_eps : float
        RoPE base and RMSNorm epsilon.
    dropout : float
        Dropout on the residual branches (**our default** 0).
    input_scale : float
        Factor on the raw input; **our default** 0.01 turns microvolts into units of 100 uV
        (as LaBraM / CBraMod), so the Huber threshold 1.0 sits at EEG scale.
    channel_order : {"ids", "input"}
        ``"ids"``: when ``ch_ids`` are given, the channels are put in the order of their ids
        (the 10-05 order of the :class:`~workbench.channels.ChannelVocabulary`, a fixed spatial
        order, so MS-ChPE sees neighbouring electrodes side by side whatever the dataset's own
        order; padding channels last) and the outputs are put back in the input order;
        ``"input"``: the channels as given.
    impl : {"fast", "ref"}
        Optimised layers or their reference twins (tests).

    Notes
    -----
    ``forward(x (B, C, T), ch_ids=None, rate_id=None, ch_mask=None)`` returns ``tokens``
    (B, C, N, d), ``embedding`` (B, d), ``aux_loss`` (mean balance loss over the MoE layers, 0
    without), ``routing`` (one dict per MoE layer: ``experts`` (B, N, k), ``weights`` (B, N, k),
    ``probs`` (B, N, E); token router: (B, N, C, .)) and ``patches`` (B, C, N, P), the scaled
    input patches.

    References
    ----------
    .. [1] "Trace", Sections 2.1-2.4, Table 6.
    """

    def __init__(self, patch_len: int = 200, d_model: int = 256, n_layers: int = 8,
                 n_heads: int = 8, n_kv_heads: int | None = None, expert_hidden: int = 512,
                 n_experts: int = 16, top_k: int = 2, n_shared: int = 1, ffn: str = "moe",
                 router: str = "temporal", n_queries: int = 4, tf_heads: int = 4,
                 normalize_topk: bool = False, conv_kernels: Sequence[int] = (3, 7, 15),
                 conv_filters: int = 16, conv_stride: int = 4, patch_branches: str = "both",
                 fusion: str = "gated", chpe_kernels: Sequence[int] = (3, 7),
                 rope_base: float = 10000.0, norm_eps: float = 1e-6, dropout: float = 0.0,
                 input_scale: float = 0.01, channel_order: str = "ids",
                 impl: str = "fast") -> None:
        super().__init__()
        check_option("ffn", ffn, ["moe", "dense"])
        self.channel_order = check_option("channel_order", channel_order, ["ids", "input"])
        self.config = {k: v for k, v in locals().items() if k in ENCODER_FIELDS}
        self.patch_len, self.d_model, self.input_scale = patch_len, d_model, input_scale
        self.patch_encoder = TimeFrequencyPatchEncoder(patch_len, d_model, conv_kernels,
                                                       conv_filters, conv_stride,
                                                       patch_branches, fusion)
        self.chpe = MultiScaleChannelPE(d_model, chpe_kernels)
        self.blocks = nn.ModuleList(
            TraceBlock(d_model, n_heads, n_kv_heads, expert_hidden, n_experts, top_k, n_shared,
                       ffn, router, n_queries, tf_heads, normalize_topk, rope_base, norm_eps,
                       dropout, impl)
            for _ in range(n_layers)
        )
        self.norm = RMSNorm(d_model, norm_eps)

    # ------------------------------------------------------------------ input
    def check_inputs(self, x: Tensor, ch_mask: Tensor | None) -> Tensor | None:
        if x.dim() != 3:
            raise ValueError(f"Trace: expected x of shape (B, C, T), got {tuple(x.shape)}.")
        B, C, T = x.shape
        if T % self.patch_len:
            raise ValueError(f"Trace: a window of T={T} samples is not a multiple of "
                             f"patch_len={self.patch_len}; crop the window or change "
                             f"'patch_len'.")
        if ch_mask is None:
            return None
        if tuple(ch_mask.shape) != (B, C):
            raise ValueError(f"Trace: expected 'ch_mask' of shape {(B, C)}, got "
                             f"{tuple(ch_mask.shape)}.")
        ch_mask = ch_mask.to(torch.bool)
        if ch_mask.device.type == "cpu" and bool((~ch_mask.any(1)).any()):
            raise ValueError("Trace: a window in the batch has no real channel (its 'ch_mask' "
                             "row is all False).")
        return ch_mask

    def patchify(self, x: Tensor) -> Tensor:
        """``x`` (B, C, T) -> scaled patches (B, C, N, patch_len)."""
        B, C, T = x.shape
        return (x * self.input_scale).reshape(B, C, T // self.patch_len, self.patch_len)

    def embed(self, patches: Tensor, ch_mask: Tensor | None) -> Tensor:
        """Patch embeddings plus MS-ChPE, ``patches`` (B, C, N, P) -> (B, N, C, d)."""
        e = self.patch_encoder(patches).transpose(1, 2)  # (B, N, C, d)
        if ch_mask is not None:
            e = e * ch_mask[:, None, :, None].to(e.dtype)  # padding channels carry nothing
        return self.chpe(e, ch_mask)

    # ------------------------------------------------------------------ forward
    def forward_patches(self, patches: Tensor, ch_mask: Tensor | None = None
                        ) -> dict[str, Any]:
        """Encode already scaled patches (B, C, N, P); see the class Notes for the outputs."""
        h = self.embed(patches, ch_mask)
        routing, balances = [], []
        for block in self.blocks:
            h, info = block(h, ch_mask)
            if info is not None:
                routing.append(_routing_entry(info))
                balances.append(info["balance"])
        tokens = self.norm(h).transpose(1, 2)  # (B, C, N, d)
        if ch_mask is None:
            embedding = tokens.mean(dim=(1, 2))
        else:
            w = ch_mask[:, :, None, None].to(tokens.dtype)  # (B, C, 1, 1)
            embedding = (tokens * w).sum((1, 2)) / (w.sum((1, 2)) * tokens.shape[2])
        aux = torch.stack(balances).mean() if balances else tokens.new_zeros(())
        return {"tokens": tokens, "embedding": embedding, "aux_loss": aux, "routing": routing,
                "patches": patches}

    def channel_permutation(self, ch_ids: Tensor | None, ch_mask: Tensor | None
                            ) -> Tensor | None:
        """Per window, the channel order of the encoder: ``perm`` (B, C) with ``x[b,
        perm[b]]`` sorted by channel id (padding last); None when the input order is kept."""
        if self.channel_order == "input" or ch_ids is None:
            return None
        key = ch_ids.to(torch.int64)
        if ch_mask is not None:  # padding after every real channel
            key = torch.where(ch_mask, key, key.new_full((), torch.iinfo(torch.int64).max))
        return torch.sort(key, dim=1, stable=True).indices  # (B, C)

    def forward(self, x: Tensor, ch_ids: Tensor | None = None, rate_id: Tensor | None = None,
                ch_mask: Tensor | None = None, **unused: Any) -> dict[str, Any]:
        ch_mask = self.check_inputs(x, ch_mask)
        perm = self.channel_permutation(ch_ids, ch_mask)
        if perm is None:
            return self.forward_patches(self.patchify(x), ch_mask)
        x = x.gather(1, perm[:, :, None].expand_as(x))  # (B, C, T) in channel-id order
        ch_mask = None if ch_mask is None else ch_mask.gather(1, perm)
        out = self.forward_patches(self.patchify(x), ch_mask)
        inv = torch.argsort(perm, dim=1)  # back to the input order
        for key in ("tokens", "patches"):  # (B, C, N, .)
            v = out[key]
            out[key] = v.gather(1, inv[:, :, None, None].expand_as(v))
        for entry in out["routing"]:
            for key, v in entry.items():
                if v.dim() == 4:  # token router: (B, N, C, .)
                    entry[key] = v.gather(2, inv[:, None, :, None].expand_as(v))
        return out

    def stream(self, ch_mask: Tensor | None = None, ch_ids: Tensor | None = None
               ) -> TraceStream:
        """A :class:`TraceStream` that feeds windows of this encoder patch by patch."""
        return TraceStream(self, ch_mask, ch_ids)


class TraceStream:
    """Causal step-by-step inference: ``stream.step(patch (B, C, patch_len))`` returns the
    step's ``tokens`` (B, C, d) and ``routing`` (per MoE layer, step axis of length 1), equal
    to the full forward's step ``t`` on the same patches.

    Each layer caches the temporal keys/values of CSTA and the routing context (TemporalFormer
    online-softmax state or running mean); a step costs ``O(C)`` work in the linear layers
    instead of ``O(N C)`` for recomputing the window. Run it under ``torch.no_grad()`` (or
    ``torch.inference_mode()``) for inference; the encoder's mode (eval) is the caller's.
    """

    def __init__(self, encoder: TraceEncoder, ch_mask: Tensor | None = None,
                 ch_ids: Tensor | None = None) -> None:
        self.encoder = encoder
        self.ch_mask = None if ch_mask is None else ch_mask.to(torch.bool)
        # the channel order of the full forward (see TraceEncoder.channel_order)
        self.perm = encoder.channel_permutation(ch_ids, self.ch_mask)
        if self.perm is not None:
            self.inv = torch.argsort(self.perm, dim=1)
            if self.ch_mask is not None:
                self.ch_mask = self.ch_mask.gather(1, self.perm)
        self.pos = 0
        self.caches = [{"attn": {}, "ffn": {}} for _ in encoder.blocks]

    def step(self, patch: Tensor) -> dict[str, Any]:
        enc = self.encoder
        if patch.dim() != 3 or patch.shape[-1] != enc.patch_len:
            raise ValueError(f"TraceStream.step: expected one patch of shape (B, C, "
                             f"{enc.patch_len}), got {tuple(patch.shape)}.")
        if self.perm is not None:
            patch = patch.gather(1, self.perm[:, :, None].expand_as(patch))
        p = (patch * enc.input_scale)[:, :, None, :]  # (B, C, 1, P)
        h = enc.embed(p, self.ch_mask)[:, 0]  # (B, C, d)
        routing = []
        for block, cache in zip(enc.blocks, self.caches):
            h, info = block.step(h, cache, self.pos, self.ch_mask)
            if info is not None:
                routing.append(_routing_entry(info))
        self.pos += 1
        tokens = enc.norm(h)  # (B, C, d)
        if self.perm is not None:
            tokens = tokens.gather(1, self.inv[:, :, None].expand_as(tokens))
            for entry in routing:
                for key, v in entry.items():
                    if v.dim() == 4:  # token router: (B, 1, C, .)
                        entry[key] = v.gather(2, self.inv[:, None, :, None].expand_as(v))
        return {"tokens": tokens, "routing": routing, "step": self.pos - 1}


# ----------------------------------------------------------------------------- models
def _split_encoder_fields(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(kwargs) - set(ENCODER_FIELDS))
    if unknown:
        raise TypeError(f"{name} got unknown argument(s) {unknown}; encoder arguments are "
                        f"{list(ENCODER_FIELDS)}.")
    return kwargs


@register_model("trace", presets={"tiny": _TINY, "paper": _PAPER})
class TraceModel(nn.Module):
    """Trace pre-training model: :class:`TraceEncoder` plus multi-horizon forecasting heads.

    Parameters
    ----------
    horizons : sequence of int
        Forecast horizons in patches ((1, 2, 4)); head ``h`` maps the state at step ``t`` to
        patches ``t+1 .. t+h`` (one Linear to ``h * patch_len``).
    **encoder_fields
        The :data:`ENCODER_FIELDS` of :class:`TraceEncoder`.

    Notes
    -----
    ``forward`` returns the encoder outputs plus ``forecast``: ``{h: (B, C, N - h, h, P)}``,
    the forecasts of patches ``t+1 .. t+h`` from the steps ``t = 0 .. N-h-1`` whose targets lie
    inside the window (horizons ``h >= N`` are left out). :meth:`forecast` applies the heads to
    any tokens, e.g. the last step's, to forecast beyond the window.

    References
    ----------
    .. [1] "Trace", Section 2.5, equation (15).
    """

    def __init__(self, horizons: Sequence[int] = (1, 2, 4), **encoder_fields: Any) -> None:
        super().__init__()
        self.horizons = tuple(int(h) for h in horizons)
        if not self.horizons or min(self.horizons) < 1 or len(set(self.horizons)) != len(
                self.horizons):
            raise ValueError(f"Invalid value for the 'horizons' parameter: expected distinct "
                             f"positive patch counts, got {tuple(horizons)}.")
        self.encoder = TraceEncoder(**_split_encoder_fields("TraceModel", encoder_fields))
        d, P = self.encoder.d_model, self.encoder.patch_len
        self.heads = nn.ModuleDict({str(h): nn.Linear(d, h * P) for h in self.horizons})

    def forecast(self, tokens: Tensor) -> dict[int, Tensor]:
        """Forecasts of every horizon from ``tokens`` (..., d): ``{h: (..., h, P)}``."""
        P = self.encoder.patch_len
        return {h: self.heads[str(h)](tokens).unflatten(-1, (h, P)) for h in self.horizons}

    def forward(self, x: Tensor, ch_ids: Tensor | None = None, rate_id: Tensor | None = None,
                ch_mask: Tensor | None = None, **unused: Any) -> dict[str, Any]:
        out = self.encoder(x, ch_ids=ch_ids, ch_mask=ch_mask)
        tokens, P = out["tokens"], self.encoder.patch_len
        N = tokens.shape[2]
        # Only the steps whose h future patches lie inside the window (the training targets):
        # the heads are the largest layers of a small model, this saves up to a third.
        out["forecast"] = {h: self.heads[str(h)](tokens[:, :, : N - h]).unflatten(-1, (h, P))
                           for h in self.horizons if h < N}  # {h: (B, C, N - h, h, P)}
        return out


@register_model("trace_classifier", presets={"tiny": _TINY, "paper": _PAPER})
class TraceClassifier(nn.Module):
    """Trace encoder plus a classification head.

    Parameters
    ----------
    n_outputs : int
        Number of classes.
    head : {"mlp", "linear"}
        A 3-layer MLP (the paper's fine-tuning head) or one Linear on the pooled embedding.
    head_hidden : int, optional
        Hidden width of the MLP (default ``d_model``).
    head_dropout : float
        Dropout inside the MLP (per dataset in the paper, Table 9: **our default** 0.1).
    head_pool : {"tokens", "mean"}
        How the MLP reads the tokens (the text does not say): ``"tokens"`` (**our default**)
        applies its first layer (Linear + SiLU) to every token and averages over real channels
        and steps (a DeepSets-style pooling, any montage); ``"mean"`` averages the tokens first.
        The plain mean of RMS-normalised tokens varies little between windows (on the embedded
        corpus its spread across windows is ~1 % of its size), so a head on it learns slowly.
    n_chans, n_times, sfreq : optional
        The common signal signature; Trace takes any channel count, ``n_times`` is checked
        against ``patch_len``.
    **encoder_fields
        The :data:`ENCODER_FIELDS` of :class:`TraceEncoder` (``horizons`` is accepted and
        ignored, so pre-training keywords may be passed through).

    Notes
    -----
    ``forward`` returns ``logits`` (B, n_outputs), ``embedding`` (what the head's last two
    layers read: (B, head_hidden) for ``head_pool="tokens"``, else the pooled tokens (B, d)),
    ``tokens``, ``aux_loss`` and ``routing``.

    References
    ----------
    .. [1] "Trace", Appendix E (fine-tuning with a three-layer MLP head).
    .. [2] Zaheer, M. et al. (2017). Deep Sets. NeurIPS.
    """

    def __init__(self, n_outputs: int = 2, head: str = "mlp", head_hidden: int | None = None,
                 head_dropout: float = 0.1, head_pool: str = "tokens",
                 n_chans: int | None = None, n_times: int | None = None,
                 sfreq: float | None = None, **encoder_fields: Any) -> None:
        super().__init__()
        check_option("head", head, ["mlp", "linear"])
        check_option("head_pool", head_pool, ["tokens", "mean"])
        encoder_fields.pop("horizons", None)
        self.encoder = TraceEncoder(**_split_encoder_fields("TraceClassifier", encoder_fields))
        P, d = self.encoder.patch_len, self.encoder.d_model
        if n_times is not None and n_times % P:
            raise ValueError(f"TraceClassifier: n_times={n_times} is not a multiple of "
                             f"patch_len={P}.")
        self.n_chans, self.n_times, self.sfreq = n_chans, n_times, sfreq
        self.head_pool = head_pool if head == "mlp" else "mean"
        if head == "linear":
            self.head_in: nn.Module | None = None
            self.head: nn.Module = nn.Linear(d, n_outputs)
        else:
            hh = head_hidden or d
            self.head_in = nn.Sequential(nn.Linear(d, hh), nn.SiLU())
            self.head = nn.Sequential(
                nn.Dropout(head_dropout), nn.Linear(hh, hh), nn.SiLU(), nn.Dropout(head_dropout),
                nn.Linear(hh, n_outputs),
            )

    def forward(self, x: Tensor, ch_ids: Tensor | None = None, rate_id: Tensor | None = None,
                ch_mask: Tensor | None = None, **unused: Any) -> dict[str, Any]:
        out = self.encoder(x, ch_ids=ch_ids, ch_mask=ch_mask)
        out.pop("patches")
        if self.head_pool == "tokens":
            h = self.head_in(out["tokens"])  # (B, C, N, hh)
            if ch_mask is None:
                out["embedding"] = h.mean(dim=(1, 2))
            else:  # average over the real channels only
                w = ch_mask.to(h.dtype)[:, :, None, None]  # (B, C, 1, 1)
                out["embedding"] = (h * w).sum((1, 2)) / (w.sum((1, 2)) * h.shape[2])
        elif self.head_in is not None:
            out["embedding"] = self.head_in(out["embedding"])
        out["logits"] = self.head(out["embedding"])
        return out


# ----------------------------------------------------------------------------- weights
def load_pretrained_encoder(classifier: nn.Module, pretrain_state_dict: Mapping[str, Tensor]
                            ) -> list[str]:
    """Copy the ``encoder.*`` weights of a ``trace`` state dict into ``classifier.encoder``.

    Accepts the state dict of a :class:`TraceModel` or :class:`TraceClassifier`, with or without
    DDP (``module.``) / ``torch.compile`` (``_orig_mod.``) prefixes; forecasting heads are left
    out. Returns the loaded keys.

    Raises
    ------
    ValueError
        Naming the missing, unexpected and shape-mismatched keys (an encoder pre-trained with
        other sizes or switches).
    """
    if not isinstance(getattr(classifier, "encoder", None), TraceEncoder):
        raise ValueError(f"{type(classifier).__name__} has no TraceEncoder attribute "
                         "'encoder'; expected a TraceClassifier.")
    return load_encoder_state(classifier.encoder, pretrain_state_dict, what="Trace encoder",
                              hint="pre-trained with another preset or ablation switch?")

