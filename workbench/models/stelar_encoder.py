"""The STELAR encoder: dual-branch patch embedding, channel embedding, criss-cross blocks.

:class:`StelarEncoder` maps a window ``x`` (B, C, T) to tokens (B, C, P, d), one per channel
and ``patch_len``-sample patch; a patch mask (:func:`random_patch_mask`) and a channel mask
keep masked patches and padding channels out of every key, so the online encoder of
pre-training sees the visible patches only. Shared by the pre-training model and the
classifier of :mod:`workbench.models.stelar`.

References
----------
.. [1] V.-C. Nguyen et al., "Balanced latent semantics and signal fidelity for EEG
       representation learning" (STELAR), Sections 2.1-2.2, Table 2.
.. [2] J. Wang et al., "CBraMod: A criss-cross brain foundation model for EEG decoding",
       arXiv:2412.07236, 2024.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from workbench.models.layers.criss_cross import (
    IMPLS,
    CrissCrossAttention,
    FullAttention,
    TransformerBlock,
    criss_cross_masks,
)
from workbench.models.layers.patch_embed import DualBranchPatchEmbed
from workbench.utils import check_option

__all__ = ["ENCODER_FIELDS", "StelarEncoder", "init_weights", "make_mask_token", "pool_mean",
           "random_patch_mask", "set_attention_impl"]

ENCODER_FIELDS: tuple[str, ...] = (
    "patch_len", "dim", "depth", "n_heads", "mlp_ratio", "qkv_bias", "init_std", "norm_eps",
    "conv_channels", "conv_kernel", "conv_stride", "norm_groups", "fft_hidden", "n_channels",
    "rope_base", "attention", "input_scale", "impl")
"""Constructor arguments of :class:`StelarEncoder`, shared by ``stelar`` and
``stelar_classifier`` (an encoder pre-trained with some values loads into a classifier built
with the same values)."""


def random_patch_mask(batch: int, n_chans: int, n_patches: int, ratio: float,
                      ch_mask: Tensor | None = None, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> Tensor:
    """Mask (B, C, P) (True = masked) of ``round(ratio * n)`` of the ``n`` real patches of each
    window, drawn uniformly at random; padding channels are never masked and at least one
    patch per window stays visible."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"Invalid value for the 'mask_ratio' parameter: expected a ratio in "
                         f"[0, 1), got {ratio!r}.")
    gen_dev = generator.device if generator is not None else device
    noise = torch.rand(batch, n_chans * n_patches, generator=generator, device=gen_dev)
    noise = noise.to(device)  # (B, C*P)
    if ch_mask is None:
        n_real = torch.full((batch,), n_chans * n_patches, device=noise.device)
    else:
        real = ch_mask.to(torch.bool)[:, :, None].expand(batch, n_chans, n_patches)
        real = real.reshape(batch, -1)  # (B, C*P)
        noise = noise.masked_fill(~real, 2.0)  # padding sorts last: never masked
        n_real = real.sum(-1)
    n_mask = torch.minimum((n_real * ratio).round().long(), (n_real - 1).clamp(min=0))
    rank = noise.argsort(-1).argsort(-1)  # (B, C*P) rank of each patch's noise
    return (rank < n_mask[:, None]).view(batch, n_chans, n_patches)


def init_weights(module: nn.Module, std: float) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)


def make_mask_token(kind: str, dim: int) -> nn.Parameter | Tensor:
    check_option("mask_token", kind, ["constant", "learnable"])
    if kind == "learnable":
        return nn.Parameter(torch.zeros(dim).normal_(std=0.02))
    return torch.zeros(dim)



class StelarEncoder(nn.Module):
    """Dual-branch patch embedding + channel embedding + criss-cross Transformer blocks.

    Parameters
    ----------
    patch_len : int
        Samples per patch (200).
    dim, depth, n_heads : int
        Width (64), blocks (2) and heads (2).
    mlp_ratio : float
        MLP hidden width / ``dim`` (4).
    qkv_bias : bool
        Query/key/value bias (True).
    init_std : float
        Std of the truncated-normal init of Linear and embedding weights (0.02).
    norm_eps : float
        LayerNorm epsilon (1e-6).
    conv_channels, conv_kernel, conv_stride, norm_groups, fft_hidden
        Patch embedder (see :class:`DualBranchPatchEmbed`).
    n_channels : int
        Size of the learnable channel-embedding table (the ``ChannelVocabulary``).
    rope_base : float
        RoPE base of the temporal attention.
    attention : {"criss_cross", "full"}
        Criss-cross blocks (the paper) or full attention over all ``C * P`` tokens (RoPE on the
        patch index), for the efficiency comparison.
    input_scale : float
        Factor applied to the raw input (e.g. ``1e6`` for windows stored in volts).
    impl : {"sdpa", "plain"}
        Attention kernel (see :func:`set_attention_impl`).

    Notes
    -----
    ``forward(x, ch_ids=None, ch_mask=None, mask=None)`` takes ``x`` (B, C, T), ``ch_ids``
    (B, C) (default ``0..C-1``), ``ch_mask`` (B, C) (True = real channel) and ``mask``
    (B, C, P) (True = masked patch) and returns tokens (B, C, P, dim); ``spectrum`` is the
    optional precomputed ``patch_embed.spectrum(x)`` (of the scaled input). Masked patches enter as
    a constant (zero) token and are never keys, padding channels are never keys: the tokens of
    visible real patches do not depend on them.
    """

    def __init__(self, patch_len: int = 200, dim: int = 64, depth: int = 2, n_heads: int = 2,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, init_std: float = 0.02,
                 norm_eps: float = 1e-6, conv_channels: int = 8, conv_kernel: int = 15,
                 conv_stride: int = 8, norm_groups: int = 4, fft_hidden: int | None = None,
                 n_channels: int = 19, rope_base: float = 10000.0,
                 attention: str = "criss_cross", input_scale: float = 1.0,
                 impl: str = "sdpa") -> None:
        super().__init__()
        check_option("attention", attention, ["criss_cross", "full"])
        check_option("impl", impl, IMPLS)
        self.patch_len, self.dim, self.attention = int(patch_len), int(dim), attention
        self.input_scale = float(input_scale)
        self.patch_embed = DualBranchPatchEmbed(patch_len, dim, conv_channels, conv_kernel,
                                                conv_stride, norm_groups, fft_hidden)
        self.chan_embed = nn.Embedding(n_channels, dim)

        def attn() -> nn.Module:
            cls = CrissCrossAttention if attention == "criss_cross" else FullAttention
            return cls(dim, n_heads, qkv_bias=qkv_bias, rope_base=rope_base, impl=impl)

        self.blocks = nn.ModuleList(TransformerBlock(dim, attn(), mlp_ratio, norm_eps)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        init_weights(self, init_std)

    def channel_ids(self, ch_ids: Tensor | None, B: int, C: int, device: torch.device) -> Tensor:
        """``ch_ids`` checked against the table (or ``0..C-1``), shape (B, C)."""
        size = self.chan_embed.num_embeddings
        if ch_ids is None:
            if C > size:
                raise ValueError(f"No 'ch_ids' given for {C} channels, but the channel table "
                                 f"has only n_channels={size} ids; pass ch_ids.")
            return torch.arange(C, device=device).expand(B, C)
        if tuple(ch_ids.shape) != (B, C):
            raise ValueError(f"Invalid shape for 'ch_ids': expected {(B, C)}, got "
                             f"{tuple(ch_ids.shape)}.")
        # Range check on CPU only: on CUDA it would synchronise every step.
        if ch_ids.device.type == "cpu" and ch_ids.numel() and (
                int(ch_ids.min()) < 0 or int(ch_ids.max()) >= size):
            raise ValueError(f"Invalid 'ch_ids': ids must lie in [0, {size}) (n_channels), got "
                             f"min {int(ch_ids.min())}, max {int(ch_ids.max())}.")
        return ch_ids

    def forward(self, x: Tensor, ch_ids: Tensor | None = None, ch_mask: Tensor | None = None,
                mask: Tensor | None = None, spectrum: Tensor | None = None) -> Tensor:
        B, C, _ = x.shape
        if self.input_scale != 1.0:
            x = x * self.input_scale
        tok = self.patch_embed(x, spectrum)  # (B, C, P, d)
        P = tok.shape[2]
        valid = None  # (B, C, P) keys: visible patches of real channels
        if mask is not None:
            tok = tok.masked_fill(mask[..., None], 0.0)  # constant mask token
            valid = ~mask
        if ch_mask is not None:
            real = ch_mask.to(torch.bool)[:, :, None].expand(B, C, P)
            valid = real if valid is None else valid & real
        tok = tok + self.chan_embed(self.channel_ids(ch_ids, B, C, x.device))[:, :, None, :]
        if self.attention == "full":
            pos = torch.arange(P, device=x.device).repeat(C)  # (C*P,) patch index per token
            flat = tok.reshape(B, C * P, self.dim)  # (B, C*P, d)
            kv = None if valid is None else valid.reshape(B, C * P)
            for blk in self.blocks:
                flat = blk(flat, key_valid=kv, positions=pos)
            return self.norm(flat).view(B, C, P, self.dim)
        masks = None if valid is None else criss_cross_masks(valid)  # shared by the blocks
        for blk in self.blocks:
            tok = blk(tok, masks=masks)
        return self.norm(tok)


def pool_mean(tokens: Tensor, keep: Tensor | None) -> Tensor:
    """Mean of tokens (B, C, P, d) over the positions where ``keep`` (B, C, P) is True."""
    if keep is None:
        return tokens.mean(dim=(1, 2))
    w = keep[..., None].to(tokens.dtype)  # (B, C, P, 1)
    return (tokens * w).sum((1, 2)) / w.sum((1, 2)).clamp(min=1.0)


def set_attention_impl(model: nn.Module, impl: str) -> nn.Module:
    """Switch every attention layer of ``model`` to ``impl`` ("sdpa" or "plain")."""
    check_option("impl", impl, IMPLS)
    for m in model.modules():
        if isinstance(m, (CrissCrossAttention, FullAttention)):
            m.impl = impl
    return model
