"""EEGPT's Electrode Temporal Encoder (ETE): every electrode a sequence of 1 s tokens.

A token is the electrode's label embedding **concatenated** with the embedding of that second's
samples (not added); a decoder-only Transformer (pre-norm, SwiGLU, RoPE, causal attention, see
:mod:`workbench.models.layers.decoder`) runs over each electrode's tokens, all electrodes of a
batch as ``B * C`` independent sequences in one call (padding electrodes are skipped). The
pre-training model and the classifier built on it are in :mod:`workbench.models.eegpt`.

References
----------
.. [1] Yue, T. et al. (2024). EEGPT: Unleashing the Potential of EEG Generalist Foundation Model
       by Autoregressive Pre-training. arXiv:2410.19779 (v2: BrainGPT). Section 3.1 (ETE).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.channels import SAMPLING_RATES
from workbench.models.layers.decoder import DecoderTransformer
from workbench.utils import check_option

__all__ = ["ENCODER_FIELDS", "ElectrodeTemporalEncoder", "masked_electrode_mean"]

ENCODER_FIELDS: tuple[str, ...] = (
    "d_model", "n_layers", "n_heads", "label_dim", "ffn_dim", "dropout", "token_len", "token_s",
    "n_channels", "pos", "rope_base", "attn_impl", "norm_eps", "input_scale", "mode",
)
"""Constructor arguments shared by ``eegpt`` and ``eegpt_classifier`` (same meaning): a
pre-trained encoder loads into a classifier built with the same values."""


def _check_shape(name: str, t: Tensor | None, shape: tuple[int, ...], x: Tensor) -> None:
    if t is not None and tuple(t.shape) != shape:
        raise ValueError(f"Invalid '{name}': expected shape {shape} for x of shape "
                         f"{tuple(x.shape)}, got {tuple(t.shape)}.")


def _real_rows(ch_mask: Tensor | None, B: int, C: int) -> Tensor | None:
    """Flat (B*C,) bool of the real electrodes; ValueError for a window with none."""
    if ch_mask is None:
        return None
    ch_mask = ch_mask.to(torch.bool)
    if bool((~ch_mask).all(dim=1).any()):
        raise ValueError("Invalid 'ch_mask': a window in the batch has no real channel "
                         "(its row is all False).")
    return ch_mask.reshape(B * C)


def _scatter_rows(h: Tensor, keep: Tensor | None, n_rows: int) -> Tensor:
    """Rows of the real electrodes back into a zero tensor of ``n_rows`` rows."""
    if keep is None:
        return h
    return h.new_zeros((n_rows, *h.shape[1:])).index_put((keep,), h)


def masked_electrode_mean(h: Tensor, ch_mask: Tensor | None) -> Tensor:
    """Mean of ``h`` (B, C, F) over the real electrodes -> (B, F)."""
    if ch_mask is None:
        return h.mean(dim=1)
    m = ch_mask.to(h.dtype)[..., None]  # (B, C, 1)
    return (h * m).sum(1) / m.sum(1).clamp(min=1.0)


# ----------------------------------------------------------------------------- ETE
class ElectrodeTemporalEncoder(nn.Module):
    """ETE: every electrode is a sequence of 1 s tokens through a causal decoder Transformer.

    Parameters
    ----------
    d_model, n_layers, n_heads : int
        Transformer width, depth and heads (**our default** ``paper``: 512, 12, 8).
    label_dim : int
        Width of the electrode-label embedding; the signal embedding has the other
        ``d_model - label_dim`` dimensions of a token (**our default** ``d_model / 4``).
    ffn_dim : int or None
        SwiGLU hidden width (None: ``8/3 d_model`` rounded up to a multiple of 8).
    dropout : float
        Dropout in the Transformer (**our default** 0).
    token_len : int
        Samples of one token as the signal embedding sees them (**our default** 200: 1 s at
        200 Hz).
    token_s : float or None
        Seconds per token when ``rate_id`` is given (1 s in the paper): a window at rate ``r``
        is cut into tokens of ``round(r * token_s)`` samples, each linearly resampled to
        ``token_len`` samples when the two differ, so one model reads windows of any rate.
        None (or no ``rate_id``): tokens of ``token_len`` samples.
    n_channels : int
        Size of the electrode-label table (``len(vocab)`` of the run's ChannelVocabulary).
    pos : {"rope", "none"}
        Rotary positions or none (the deck's open question on positional encoding).
    rope_base : float
        RoPE frequency base.
    attn_impl : {"sdpa", "plain"}
        ``F.scaled_dot_product_attention`` or its written-out reference twin.
    norm_eps : float
        RMSNorm epsilon.
    input_scale : float
        Factor applied to the raw samples (e.g. ``1e6`` for windows stored in volts).
    mode : {"ar", "mae"}
        Causal attention (autoregressive pre-training) or bidirectional attention (the MAE
        comparison of the paper).

    Notes
    -----
    ``forward(x (B, C, T), ch_ids (B, C), rate_id (B,), ch_mask (B, C), n_tokens=None)``
    returns ``tokens`` (B, C, N, d_model) and ``patches`` (B, C, N, token_len) (the scaled,
    resampled seconds the model reads). ``n_tokens`` forces ``N`` (tokens of ``T / N``
    samples). Padding electrodes never enter the Transformer; their rows are zero. Without
    ``ch_ids`` the label part of every token is zero.
    """

    def __init__(self, d_model: int = 512, n_layers: int = 12, n_heads: int = 8,
                 label_dim: int = 128, ffn_dim: int | None = None, dropout: float = 0.0,
                 token_len: int = 200, token_s: float | None = 1.0, n_channels: int = 128,
                 pos: str = "rope", rope_base: float = 10000.0, attn_impl: str = "sdpa",
                 norm_eps: float = 1e-6, input_scale: float = 1.0, mode: str = "ar"):
        super().__init__()
        check_option("mode", mode, ["ar", "mae"])
        if not 0 < label_dim < d_model:
            raise ValueError(f"Invalid 'label_dim': expected 0 < label_dim < d_model "
                             f"({d_model}), got {label_dim}.")
        self.config = {k: v for k, v in locals().items() if k in ENCODER_FIELDS}
        self.d_model, self.label_dim, self.token_len = d_model, label_dim, token_len
        self.token_s, self.input_scale, self.mode = token_s, input_scale, mode
        self.causal = mode == "ar"
        self.label_embed = nn.Embedding(n_channels, label_dim)
        self.signal_embed = nn.Linear(token_len, d_model - label_dim)
        nn.init.normal_(self.label_embed.weight, std=0.02)
        self.decoder = DecoderTransformer(d_model, n_layers, n_heads, ffn_dim, dropout, pos,
                                          rope_base, attn_impl, norm_eps)

    # ------------------------------------------------------------------ tokens
    def token_length(self, T: int, rate_id: Tensor | None = None, n_tokens: int | None = None
                     ) -> int:
        """Samples per token of a window of ``T`` samples; ValueError naming both when ``T``
        is not a multiple of it."""
        if n_tokens is not None:
            if n_tokens < 1 or T % n_tokens:
                raise ValueError(f"Invalid 'n_tokens': a window of T={T} samples does not split "
                                 f"into {n_tokens} equal tokens.")
            return T // n_tokens
        if rate_id is not None and self.token_s is not None:
            r = rate_id.reshape(-1)
            r0 = int(r[0])
            if not 0 <= r0 < len(SAMPLING_RATES) or bool((r != r0).any()):
                raise ValueError(f"Invalid 'rate_id': expected one id in [0, "
                                 f"{len(SAMPLING_RATES)}) shared by the whole batch, got "
                                 f"{r.tolist()[:8]}.")
            P = round(SAMPLING_RATES[r0] * self.token_s)
            what = f"{self.token_s} s at {SAMPLING_RATES[r0]:g} Hz"
        else:
            P, what = self.token_len, "'token_len'"
        if T % P:
            raise ValueError(f"Invalid window length: T={T} samples is not a multiple of the "
                             f"token length {P} samples ({what}).")
        return P

    def tokenize(self, x: Tensor, rate_id: Tensor | None = None, n_tokens: int | None = None
                 ) -> Tensor:
        """The seconds of ``x`` (B, C, T) as (B, C, N, token_len), scaled by ``input_scale``."""
        B, C, T = x.shape
        P = self.token_length(T, rate_id, n_tokens)
        patches = x.reshape(B, C, T // P, P)  # (B, C, N, P)
        if self.input_scale != 1.0:
            patches = patches * self.input_scale
        if P != self.token_len:  # another rate: resample every second to token_len samples
            N = T // P
            patches = F.interpolate(patches.reshape(B * C * N, 1, P), size=self.token_len,
                                    mode="linear", align_corners=False)
            patches = patches.reshape(B, C, N, self.token_len)  # (B, C, N, token_len)
        return patches

    def embed(self, patches: Tensor, ids: Tensor | None = None, token_mask: Tensor | None = None,
              mask_embedding: Tensor | None = None) -> Tensor:
        """Tokens ``[label(id) || signal(second)]`` (R, N, d_model) of rows ``patches``
        (R, N, token_len); ``token_mask`` (R, N) replaces the signal part by ``mask_embedding``."""
        R, N, _ = patches.shape
        sig = self.signal_embed(patches)  # (R, N, d - label_dim)
        if token_mask is not None:
            if mask_embedding is None:
                raise ValueError("A 'token_mask' needs a 'mask_embedding'.")
            sig = torch.where(token_mask[..., None], mask_embedding.to(sig.dtype), sig)
        if ids is None:
            lab = sig.new_zeros(R, N, self.label_dim)
        else:
            if ids.device.type == "cpu" and ids.numel() and (
                    int(ids.min()) < 0 or int(ids.max()) >= self.label_embed.num_embeddings):
                raise ValueError(f"Invalid 'ch_ids': ids must lie in [0, "
                                 f"{self.label_embed.num_embeddings}), got min {int(ids.min())}, "
                                 f"max {int(ids.max())}; raise 'n_channels'.")
            lab = self.label_embed(ids)[:, None, :].expand(R, N, self.label_dim)
        return torch.cat([lab, sig], dim=-1)  # (R, N, d): concatenated, never summed

    def encode_rows(self, patches: Tensor, ids: Tensor | None = None,
                    token_mask: Tensor | None = None, mask_embedding: Tensor | None = None,
                    cache=None, impl: str | None = None) -> Tensor:
        """Transformer outputs (R, N, d_model) of independent electrode sequences (R, N, L)."""
        tok = self.embed(patches, ids, token_mask, mask_embedding)
        return self.decoder(tok, causal=self.causal, cache=cache, impl=impl)

    def forward(self, x: Tensor, ch_ids: Tensor | None = None, rate_id: Tensor | None = None,
                ch_mask: Tensor | None = None, n_tokens: int | None = None,
                token_mask: Tensor | None = None, mask_embedding: Tensor | None = None,
                impl: str | None = None) -> dict[str, Tensor]:
        if x.dim() != 3:
            raise ValueError(f"Invalid 'x': expected shape (B, C, T), got {tuple(x.shape)}.")
        B, C, _ = x.shape
        _check_shape("ch_ids", ch_ids, (B, C), x)
        _check_shape("ch_mask", ch_mask, (B, C), x)
        patches = self.tokenize(x, rate_id, n_tokens)  # (B, C, N, L)
        N = patches.shape[2]
        _check_shape("token_mask", token_mask, (B, C, N), x)
        rows = patches.reshape(B * C, N, self.token_len)  # one sequence per electrode
        ids = None if ch_ids is None else ch_ids.reshape(B * C)
        tm = None if token_mask is None else token_mask.reshape(B * C, N)
        keep = _real_rows(ch_mask, B, C)
        if keep is not None:  # only real electrodes enter the Transformer
            rows = rows[keep]
            ids = None if ids is None else ids[keep]
            tm = None if tm is None else tm[keep]
        h = self.encode_rows(rows, ids, tm, mask_embedding, impl=impl)  # (R, N, d)
        tokens = _scatter_rows(h, keep, B * C).view(B, C, N, self.d_model)  # (B, C, N, d)
        return {"tokens": tokens, "patches": patches}
