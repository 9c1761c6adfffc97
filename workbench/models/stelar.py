"""STELAR: criss-cross encoder pre-trained by masked latent prediction + masked reconstruction.

Pre-training model ``"stelar"`` (:class:`StelarPretrain`)::

    x (B, C, T) -> patches (B, C, P, patch_len), P = T / patch_len
    mask (B, C, P)        50 % of the real patches of each window, at random
    encoder (online)      dual-branch patch embedding + channel embedding, ``depth`` criss-cross
                          blocks whose keys are the visible patches only -> tokens (B, C, P, d)
    target_encoder (EMA)  the same encoder on the full signal, no gradient -> LN -> target
    predictor             1 criss-cross block; mask tokens at masked positions are the queries,
                          keys/values come from visible tokens only -> pred (B, C, P, d)
    reconstructor         1 full-attention block over all C * P tokens -> recon (B, C, T)

The objective (``workbench.objectives.masked.MaskedObjective``) regresses ``pred`` onto
``target`` and ``recon`` onto the input at masked patches, weighted by MTPE-GB, and moves the
target encoder by EMA after every step (:meth:`StelarPretrain.update_target`).

Downstream model ``"stelar_classifier"`` (:class:`StelarClassifier`): an optional
:class:`~workbench.models.layers.heads.ChannelAdapter` (1x1 conv, dataset channels -> the
pre-training channels), ``encoder`` (weights from pre-training, :func:`load_pretrained_encoder`),
mean pooling or all tokens flattened, and a linear or MLP ``head``; the STELAR method
flattens (:mod:`workbench.methods.stelar`).

Sizes of the ``paper`` preset with 19 channel ids: encoder 113,680 parameters (paper: about
112 K); trainable total 266,056 (paper: about 263 K). The paper gives neither the patch
embedder's convolutions nor the predictor and reconstructor widths: **our defaults** are
CBraMod's patch convolutions (25 channels, kernel 49, stride 25, GroupNorm(5)),
``pred_dim=64`` and ``rec_dim=80``.

References
----------
.. [1] V.-C. Nguyen et al., "Balanced latent semantics and signal fidelity for EEG
       representation learning" (STELAR), Sections 2.1-2.3, Tables 2-3, Appendix E-F.
.. [2] J. Wang et al., "CBraMod: A criss-cross brain foundation model for EEG decoding",
       arXiv:2412.07236, 2024.
.. [3] M. Assran et al., "Self-supervised learning from images with a joint-embedding
       predictive architecture" (I-JEPA), CVPR 2023.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.channels import ChannelVocabulary
from workbench.models.layers.criss_cross import CrissCrossAttention, FullAttention, TransformerBlock
from workbench.models.layers.heads import HEADS, ChannelAdapter, make_head
from workbench.models.layers.patch_embed import patchify, unpatchify
from workbench.models.registry import register_model
from workbench.models.stelar_encoder import (
    ENCODER_FIELDS,
    StelarEncoder,
    init_weights,
    make_mask_token,
    pool_mean,
    random_patch_mask,
    set_attention_impl,
)
from workbench.models.transfer import load_encoder_state, strip_wrappers
from workbench.utils import check_option

logger = logging.getLogger("workbench")

__all__ = ["ENCODER_FIELDS", "STELAR_VARIANTS", "StelarClassifier", "StelarEncoder",
           "StelarPretrain", "load_pretrained_encoder", "random_patch_mask",
           "set_attention_impl", "stelar_variant"]

_ENC_PAPER: dict[str, Any] = dict(
    patch_len=200, dim=64, depth=2, n_heads=2, mlp_ratio=4.0, qkv_bias=True, init_std=0.02,
    norm_eps=1e-6, conv_channels=25, conv_kernel=49, conv_stride=25, norm_groups=5,
    fft_hidden=64, n_channels=19)
# Same structure, half the width: a smoke training step (32 windows x 62 ch x 4 patches) on
# one CPU thread stays well under 0.1 s.
_ENC_TINY: dict[str, Any] = dict(
    patch_len=200, dim=32, depth=2, n_heads=2, mlp_ratio=2.0, qkv_bias=True, init_std=0.02,
    norm_eps=1e-6, conv_channels=4, conv_kernel=49, conv_stride=25, norm_groups=2,
    fft_hidden=32, n_channels=62)
_PRE_PAPER = dict(_ENC_PAPER, mask_ratio=0.5, pred_dim=64, pred_heads=2, rec_dim=80,
                  rec_heads=2)
_PRE_TINY = dict(_ENC_TINY, mask_ratio=0.5, pred_dim=32, pred_heads=2, rec_dim=32, rec_heads=2)
_CLS_EXTRA = dict(head="linear", pooling="mean", head_dropout=0.0)

def _variant(description: str, objective: dict[str, Any] | None = None,
             model: dict[str, Any] | None = None, pretrained: bool = True) -> dict[str, Any]:
    return {"model": dict(model or {}), "pretrained": pretrained, "description": description,
            "objective": dict(objective or {"weighting": "mtpe_gb", "rule": "proportional"})}


STELAR_VARIANTS: dict[str, dict[str, Any]] = {
    "mtpe_gb": _variant("STELAR: both losses balanced by MTPE-GB (Algorithm 1 as printed: "
                        "raw weights proportional to the progress u_i)",
                        {"weighting": "mtpe_gb", "rule": "proportional"}),
    "mtpe_gb_inverse": _variant("MTPE-GB with raw weights proportional to 1/u_i (the lagging "
                                "task gets more weight)",
                                {"weighting": "mtpe_gb", "rule": "inverse"}),
    **{f"fixed_{w}": _variant(f"Fixed weights w_lat = {w}, w_rec = {1 - w:.1f}",
                              {"weighting": "fixed", "w_lat": w})
       for w in (0.1, 0.3, 0.5, 0.7, 0.9)},
    "latent_only": _variant("Latent prediction only (w_lat = 1, w_rec = 0)",
                            {"weighting": "fixed", "w_lat": 1.0}),
    "recon_only": _variant("Masked reconstruction only (w_lat = 0, w_rec = 1)",
                           {"weighting": "fixed", "w_lat": 0.0}),
    "no_ema": _variant("No EMA teacher: the online encoder (stop-gradient) is the target",
                       model={"ema": False}),
    "mask_0.3": _variant("30 % of the patches masked", model={"mask_ratio": 0.3}),
    "mask_0.7": _variant("70 % of the patches masked", model={"mask_ratio": 0.7}),
    "scratch": _variant("The classifier trained from a random encoder (no pre-training)",
                        pretrained=False),
}
"""Variants, each one switch: ``model`` overrides of ``stelar``, ``objective`` keyword
arguments of ``MaskedObjective``, ``pretrained`` (start fine-tuning from the pre-trained
encoder). A fixed weight is ``{"weighting": "fixed", "w_lat": w}`` for any ``w`` in [0, 1];
the default mask ratio is 0.5."""


def stelar_variant(name: str) -> dict[str, Any]:
    """A copy of one :data:`STELAR_VARIANTS` entry (ValueError naming the variants)."""
    check_option("variant", name, list(STELAR_VARIANTS))
    return copy.deepcopy(STELAR_VARIANTS[name])



@register_model("stelar", presets={"tiny": _PRE_TINY, "paper": _PRE_PAPER})
class StelarPretrain(nn.Module):
    """STELAR pre-training model: online encoder, EMA target encoder, predictor, reconstructor.

    Parameters
    ----------
    mask_ratio : float
        Fraction of the real patches masked per window (0.5).
    pred_dim, pred_heads : int
        Width and heads of the 1-block criss-cross predictor (**our default** 64, 2).
    rec_dim, rec_heads : int
        Width and heads of the 1-block full-attention reconstructor (**our default** 80, 2).
    mask_token : {"constant", "learnable"}
        Mask token of the predictor and reconstructor queries (the paper: constant, zeros).
    ema : bool
        Keep an EMA target encoder (False: the online encoder on the full signal, under
        ``no_grad``, is its own target: the "no EMA" variant).
    target_norm : bool
        Layer-normalise the target latents (no affine), as I-JEPA.
    vocab_ids : sequence of int, optional
        Ids, in the run's channel vocabulary, of the rows of the channel-embedding table, in
        row order (STELAR: the 19 channels of the 10-20 set, ``n_channels=19``). When given,
        ``ch_ids`` are vocabulary ids, each mapped to its row; a channel whose id has no row
        is treated as padding (never a key, never masked, no loss), so windows of any montage
        go in and only the table's channels are modelled. None: ``ch_ids`` are rows.
    **encoder_fields
        :data:`ENCODER_FIELDS` of :class:`StelarEncoder`.

    Notes
    -----
    ``forward(x, ch_ids=None, rate_id=None, ch_mask=None, mask=None, generator=None)`` returns
    ``tokens`` (B, C, P, d) (online encoder), ``embedding`` (B, d) (mean over visible real
    tokens), ``pred`` and ``target`` (B, C, P, d), ``recon`` and ``signal`` (B, C, T) (the
    reconstruction and its target, the scaled input) and ``mask`` (B, C, P) (True = masked
    real patch). ``mask`` is drawn with :func:`random_patch_mask` (from ``generator`` if
    given) unless passed. ``rate_id`` is accepted and ignored (STELAR resamples to one rate).
    :meth:`encode` gives the unmasked tokens and embedding (features).
    """

    def __init__(self, mask_ratio: float = 0.5, pred_dim: int = 64, pred_heads: int = 2,
                 rec_dim: int = 80, rec_heads: int = 2, mask_token: str = "constant",
                 ema: bool = True, target_norm: bool = True,
                 vocab_ids: Sequence[int] | None = None, **encoder_fields: Any) -> None:
        super().__init__()
        unknown = sorted(set(encoder_fields) - set(ENCODER_FIELDS))
        if unknown:
            raise TypeError(f"StelarPretrain got unknown argument(s) {unknown}; encoder "
                            f"arguments are {list(ENCODER_FIELDS)}.")
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"Invalid value for the 'mask_ratio' parameter: expected a ratio "
                             f"in [0, 1), got {mask_ratio!r}.")
        self.mask_ratio, self.ema, self.target_norm = float(mask_ratio), bool(ema), target_norm
        self.encoder_config = dict(encoder_fields)
        self.encoder = StelarEncoder(**encoder_fields)
        enc = self.encoder
        d, n_ch, L = enc.dim, enc.chan_embed.num_embeddings, enc.patch_len
        self.vocab_ids = None if vocab_ids is None else [int(i) for i in vocab_ids]
        row_of = None
        if self.vocab_ids is not None:
            if len(self.vocab_ids) != n_ch or len(set(self.vocab_ids)) != n_ch or min(
                    self.vocab_ids, default=0) < 0:
                raise ValueError(f"Invalid value for the 'vocab_ids' parameter: expected "
                                 f"{n_ch} distinct ids >= 0 (n_channels), got {vocab_ids!r}.")
            row_of = torch.full((max(self.vocab_ids) + 1,), -1, dtype=torch.long)
            row_of[torch.tensor(self.vocab_ids)] = torch.arange(n_ch)
        self.register_buffer("row_of", row_of, persistent=False)  # vocabulary id -> row, -1
        f = {k: encoder_fields[k] for k in ("qkv_bias", "rope_base") if k in encoder_fields}
        eps = encoder_fields.get("norm_eps", 1e-6)
        ratio = encoder_fields.get("mlp_ratio", 4.0)
        std = encoder_fields.get("init_std", 0.02)
        impl = encoder_fields.get("impl", "sdpa")
        self.target_encoder = None
        if self.ema:
            self.target_encoder = copy.deepcopy(enc).requires_grad_(False)
        # Predictor: 1 criss-cross block, keys/values from visible tokens only.
        self.pred_embed = nn.Linear(d, pred_dim)
        self.pred_chan_embed = nn.Embedding(n_ch, pred_dim)
        self.pred_block = TransformerBlock(
            pred_dim, CrissCrossAttention(pred_dim, pred_heads, impl=impl, **f), ratio, eps)
        self.pred_norm = nn.LayerNorm(pred_dim, eps=eps)
        self.pred_proj = nn.Linear(pred_dim, d)
        # Reconstructor: 1 full-attention block over all C * P tokens.
        self.rec_embed = nn.Linear(d, rec_dim)
        self.rec_chan_embed = nn.Embedding(n_ch, rec_dim)
        self.rec_block = TransformerBlock(
            rec_dim, FullAttention(rec_dim, rec_heads, impl=impl, **f), ratio, eps)
        self.rec_norm = nn.LayerNorm(rec_dim, eps=eps)
        self.rec_head = nn.Linear(rec_dim, L)
        tok_p, tok_r = make_mask_token(mask_token, pred_dim), make_mask_token(mask_token, rec_dim)
        for name, t in (("pred_mask_token", tok_p), ("rec_mask_token", tok_r)):
            if isinstance(t, nn.Parameter):
                self.register_parameter(name, t)
            else:
                self.register_buffer(name, t, persistent=False)
        for m in (self.pred_embed, self.pred_chan_embed, self.pred_block, self.pred_proj,
                  self.rec_embed, self.rec_chan_embed, self.rec_block, self.rec_head):
            init_weights(m, std)

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """EMA step ``target <- momentum * target + (1 - momentum) * online`` (no-op without
        an EMA target)."""
        if self.target_encoder is None:
            return
        tgt = list(self.target_encoder.parameters())
        src = [p.detach() for p in self.encoder.parameters()]
        torch._foreach_mul_(tgt, momentum)
        torch._foreach_add_(tgt, src, alpha=1.0 - momentum)

    def encode(self, x: Tensor, ch_ids: Tensor | None = None, rate_id: Tensor | None = None,
               ch_mask: Tensor | None = None) -> dict[str, Tensor]:
        """Unmasked online-encoder ``tokens`` (B, C, P, d) and ``embedding`` (B, d), the
        mean over the tokens of real channels (the features of a pre-trained model)."""
        B, C = x.shape[:2]
        ids, real = self.channel_rows(ch_ids, ch_mask, B, C, x.device)
        tokens = self.encoder(x, ids, real)
        keep = None if real is None else real[:, :, None].expand(tokens.shape[:3])
        return {"tokens": tokens, "embedding": pool_mean(tokens, keep)}

    def channel_rows(self, ch_ids: Tensor | None, ch_mask: Tensor | None, B: int, C: int,
                     device: torch.device) -> tuple[Tensor, Tensor | None]:
        """Rows of the channel table (B, C) and the real-channel mask (B, C) (None: all real).

        With ``vocab_ids``, vocabulary ids map to rows and channels without a row become
        padding (see the class docstring).
        """
        real = None if ch_mask is None else ch_mask.to(torch.bool)
        if real is not None and tuple(real.shape) != (B, C):
            raise ValueError(f"Invalid shape for 'ch_mask': expected {(B, C)}, got "
                             f"{tuple(real.shape)}.")
        if self.row_of is not None and ch_ids is not None:
            if tuple(ch_ids.shape) != (B, C):
                raise ValueError(f"Invalid shape for 'ch_ids': expected {(B, C)}, got "
                                 f"{tuple(ch_ids.shape)}.")
            n = self.row_of.numel()
            inside = (ch_ids >= 0) & (ch_ids < n)
            rows = torch.where(inside, self.row_of[ch_ids.clamp(0, n - 1)], -1)  # (B, C)
            known = rows >= 0
            real = known if real is None else real & known
            ch_ids = rows.clamp(min=0)  # padding rows: any valid id, never a key
        ids = self.encoder.channel_ids(ch_ids, B, C, device)
        if real is not None and bool(real.all()):
            real = None  # no padding: skip the key masks where nothing else is masked
        return ids, real

    def forward(self, x: Tensor, ch_ids: Tensor | None = None, rate_id: Tensor | None = None,
                ch_mask: Tensor | None = None, mask: Tensor | None = None,
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
        enc = self.encoder
        signal = x * enc.input_scale if enc.input_scale != 1.0 else x
        B, C, P, L = patchify(signal, enc.patch_len).shape
        ids, real = self.channel_rows(ch_ids, ch_mask, B, C, x.device)
        if mask is None:
            mask = random_patch_mask(B, C, P, self.mask_ratio, real, generator, x.device)
        elif tuple(mask.shape) != (B, C, P):
            raise ValueError(f"Invalid shape for 'mask': expected {(B, C, P)}, got "
                             f"{tuple(mask.shape)}.")
        real3 = None if real is None else real[:, :, None].expand(B, C, P)
        mask = mask.bool() if real3 is None else mask.bool() & real3
        visible = ~mask if real3 is None else ~mask & real3  # (B, C, P)

        spec = enc.patch_embed.spectrum(signal)  # shared by the two encoders (no parameters)
        tokens = enc(x, ids, real, mask, spec)  # (B, C, P, d)
        with torch.no_grad():
            teacher = self.target_encoder if self.target_encoder is not None else enc
            target = teacher(x, ids, real, None, spec)  # full signal
            if self.target_norm:
                target = F.layer_norm(target, target.shape[-1:])

        # Predictor: mask tokens (+ channel embedding, RoPE in time) query visible tokens.
        h = self.pred_embed(tokens)  # (B, C, P, pd)
        h = torch.where(mask[..., None], self.pred_mask_token.to(h.dtype), h)
        h = h + self.pred_chan_embed(ids)[:, :, None, :]
        h = self.pred_block(h, key_valid=visible)
        pred = self.pred_proj(self.pred_norm(h))  # (B, C, P, d)

        # Reconstructor: full attention over the C * P tokens (mask tokens included as keys).
        r = self.rec_embed(tokens)  # (B, C, P, rd)
        r = torch.where(mask[..., None], self.rec_mask_token.to(r.dtype), r)
        r = (r + self.rec_chan_embed(ids)[:, :, None, :]).reshape(B, C * P, -1)  # (B, C*P, rd)
        pos = torch.arange(P, device=x.device).repeat(C)  # (C*P,) patch index per token
        kv = None if real3 is None else real3.reshape(B, C * P)
        r = self.rec_block(r, key_valid=kv, positions=pos)
        recon = self.rec_head(self.rec_norm(r)).view(B, C, P, L)  # (B, C, P, patch_len)
        return {"tokens": tokens, "embedding": pool_mean(tokens, visible), "pred": pred,
                "target": target, "recon": unpatchify(recon), "signal": signal, "mask": mask}


@register_model("stelar_classifier", presets={"tiny": dict(_ENC_TINY, **_CLS_EXTRA),
                                              "paper": dict(_ENC_PAPER, **_CLS_EXTRA)})
class StelarClassifier(nn.Module):
    """STELAR encoder + pooling + head, with an optional 1x1-conv channel adapter.

    Parameters
    ----------
    n_outputs : int
        Classes.
    n_chans : int, optional
        Channels of the dataset (required with an adapter; checked against the input).
    head : {"linear", "mlp"}
        Linear probe head or MLP head on the embedding.
    head_hidden : int, optional
        Hidden width of the MLP head (default: the embedding width).
    head_dropout : float
        Dropout before the head's last Linear.
    pooling : {"mean", "flatten"}
        Mean over real tokens (embedding width ``dim``) or all tokens concatenated
        (``C * P * dim``; needs ``n_times`` and a fixed channel count).
    adapter_channels : int or sequence of str, optional
        Put a :class:`ChannelAdapter` from ``n_chans`` to these pre-training channels before the
        encoder; the encoder then sees their channel ids. A count ``k`` means ids ``0..k-1``
        (the pre-training vocabulary is exactly these channels, as the paper's 19); names are
        looked up in ``channel_vocab``. None: no adapter, the batch's ``ch_ids`` are used.
    channel_vocab : ChannelVocabulary or sequence of str, optional
        The pre-training vocabulary (names in id order) for named ``adapter_channels``.
    channel_names : sequence of str, optional
        The dataset's channel names in input order (``n_chans`` of them). With named
        ``adapter_channels`` the adapter then starts as :meth:`ChannelAdapter.from_names`:
        each pre-training channel the dataset has is copied, the others get the mean of all
        channels (**our default**; the paper does not say how its adapter starts). Without
        it the adapter starts as a random 1x1 convolution.
    n_times : int, optional
        Window length in samples (a multiple of ``patch_len``; required for "flatten").
    **encoder_fields
        :data:`ENCODER_FIELDS` of :class:`StelarEncoder`.

    Notes
    -----
    ``forward(x, ch_ids=None, rate_id=None, ch_mask=None)`` returns ``logits`` (B, n_outputs),
    ``embedding`` (B, F) (what the head reads) and ``tokens`` (B, C', P, dim). Submodules:
    ``adapter`` (or None), ``encoder`` (pre-trained weights), ``head`` (new).
    """

    def __init__(self, n_outputs: int = 2, n_chans: int | None = None, head: str = "linear",
                 head_hidden: int | None = None, head_dropout: float = 0.0,
                 pooling: str = "mean", adapter_channels: int | Sequence[str] | None = None,
                 channel_vocab: ChannelVocabulary | Sequence[str] | None = None,
                 channel_names: Sequence[str] | None = None,
                 n_times: int | None = None, **encoder_fields: Any) -> None:
        super().__init__()
        unknown = sorted(set(encoder_fields) - set(ENCODER_FIELDS))
        if unknown:
            raise TypeError(f"StelarClassifier got unknown argument(s) {unknown}; encoder "
                            f"arguments are {list(ENCODER_FIELDS)}.")
        check_option("head", head, HEADS)
        self.pooling = check_option("pooling", pooling, ["mean", "flatten"])
        self.n_chans, self.n_times = n_chans, n_times
        self.encoder = StelarEncoder(**encoder_fields)
        self.adapter: ChannelAdapter | None = None
        ids = None
        if adapter_channels is not None:
            if n_chans is None:
                raise ValueError("Invalid value for the 'n_chans' parameter: the channel adapter "
                                 "needs the dataset's channel count, got None.")
            ids = self._adapter_ids(adapter_channels, channel_vocab)
            if channel_names is not None and not isinstance(adapter_channels, int):
                if len(channel_names) != n_chans:
                    raise ValueError(f"Invalid value for the 'channel_names' parameter: "
                                     f"expected n_chans={n_chans} names, got "
                                     f"{len(channel_names)}.")
                self.adapter = ChannelAdapter.from_names(list(channel_names),
                                                         list(adapter_channels))
            else:
                self.adapter = ChannelAdapter(n_chans, len(ids))
        self.register_buffer("adapter_ids", ids, persistent=False)
        if n_times is not None:
            patchify(torch.zeros(1, 1, n_times), self.encoder.patch_len)  # raises if invalid
        feat = self.encoder.dim
        if pooling == "flatten":
            n_c = len(ids) if ids is not None else n_chans
            if n_c is None or n_times is None:
                raise ValueError("pooling='flatten' needs a fixed token grid: pass 'n_times' and "
                                 "'n_chans' (or 'adapter_channels').")
            feat = n_c * (n_times // self.encoder.patch_len) * self.encoder.dim
        self.embed_dim = feat
        self.head = make_head(head, feat, n_outputs, head_hidden, head_dropout)

    def _adapter_ids(self, channels: int | Sequence[str],
                     vocab: ChannelVocabulary | Sequence[str] | None) -> Tensor:
        size = self.encoder.chan_embed.num_embeddings
        if isinstance(channels, int):
            if not 1 <= channels <= size:
                raise ValueError(f"Invalid value for the 'adapter_channels' parameter: expected "
                                 f"a count in [1, n_channels={size}], got {channels}.")
            return torch.arange(channels)
        if vocab is None:
            raise ValueError("Named 'adapter_channels' need 'channel_vocab' (the pre-training "
                             "vocabulary, names in id order) to find their ids.")
        voc = vocab if isinstance(vocab, ChannelVocabulary) else None
        names = list(vocab.names if voc is not None else vocab)
        if voc is None:
            voc_index = {n: i for i, n in enumerate(names)}
            missing = [c for c in channels if c not in voc_index]
            if missing:
                raise ValueError(f"Invalid 'adapter_channels': {missing} not in 'channel_vocab' "
                                 f"{names}.")
            ids = [voc_index[c] for c in channels]
        else:
            ids = voc.ids(list(channels)).tolist()
        if max(ids) >= size:
            raise ValueError(f"Invalid 'channel_vocab': it has {len(names)} channels but the "
                             f"channel table has n_channels={size}.")
        return torch.tensor(ids, dtype=torch.long)

    def forward(self, x: Tensor, ch_ids: Tensor | None = None, rate_id: Tensor | None = None,
                ch_mask: Tensor | None = None) -> dict[str, Tensor]:
        if x.dim() != 3 or (self.n_chans is not None and x.shape[1] != self.n_chans):
            raise ValueError(f"Invalid input shape for StelarClassifier: expected (batch, "
                             f"{self.n_chans or 'channels'}, time), got {tuple(x.shape)}.")
        if self.n_times is not None and x.shape[-1] != self.n_times:
            raise ValueError(f"Invalid window length: expected n_times={self.n_times}, got "
                             f"{x.shape[-1]}.")
        if self.adapter is not None:
            x = self.adapter(x, ch_mask)  # (B, k, T): the pre-training channels
            ch_ids = self.adapter_ids.expand(x.shape[0], -1)
            ch_mask = None
        tokens = self.encoder(x, ch_ids, ch_mask)  # (B, C', P, d)
        keep = None if ch_mask is None else ch_mask.bool()[:, :, None].expand(tokens.shape[:3])
        if self.pooling == "mean":
            emb = pool_mean(tokens, keep)
        else:
            emb = (tokens if keep is None else tokens * keep[..., None]).flatten(1)
        return {"logits": self.head(emb), "embedding": emb, "tokens": tokens}


def load_pretrained_encoder(classifier: nn.Module, pretrain_state_dict: Mapping[str, Tensor],
                            source: str = "online") -> list[str]:
    """Copy the pre-trained encoder weights into ``classifier.encoder``.

    Parameters
    ----------
    classifier : StelarClassifier
    pretrain_state_dict : mapping
        State dict of a ``stelar`` pre-training model (``module.`` / ``_orig_mod.`` prefixes
        of DDP / ``torch.compile`` are stripped), or of a bare encoder.
    source : {"online", "target"}
        Take the online encoder (``encoder.*``, default) or the EMA target
        (``target_encoder.*``).

    Returns
    -------
    list of str
        The loaded encoder keys.

    Raises
    ------
    ValueError
        Naming the missing, unexpected or shape-mismatched keys.
    """
    check_option("source", source, ["online", "target"])
    if not isinstance(getattr(classifier, "encoder", None), StelarEncoder):
        raise ValueError(f"{type(classifier).__name__} has no StelarEncoder 'encoder'.")
    prefix = "encoder." if source == "online" else "target_encoder."
    state = strip_wrappers(pretrain_state_dict)
    if source == "target" and not any(k.startswith(prefix) for k in state):
        raise ValueError("load_pretrained_encoder: source='target' but the state dict has no "
                         "'target_encoder.' keys (pre-trained without EMA?).")
    return load_encoder_state(classifier.encoder, state, prefix=prefix,
                              what=f"STELAR encoder ({source})",
                              hint="built with other encoder arguments?")
