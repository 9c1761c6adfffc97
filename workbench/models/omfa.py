"""One Model for All: the ART encoder (univariate) and the ART + GAT classifier (multivariate).

Stage one pre-trains :class:`~workbench.models.art_encoder.ARTEncoder` ("art_encoder") on single channels with an instance
contrastive objective (``workbench.objectives.contrastive``). Stage two builds
:class:`OMFAClassifier` ("omfa_classifier"), loads the pre-trained weights into its ``encoder``
with :func:`load_pretrained_encoder` and fine-tunes everything with differential learning rates
(:func:`param_groups`). :data:`OMFA_VARIANTS` names the paper's ablations.

Channel ids index the Unified Channel Schema (a ``workbench.channels.ChannelVocabulary``, 62
channels for SEED + DEAP); rate ids index ``workbench.channels.SAMPLING_RATES``.

References
----------
.. [1] "One Model for All: Universal Pre-training for EEG based Emotion Recognition across
       Heterogeneous Datasets and Paradigms", Sections III-B to III-D.
.. [2] Velickovic, P. et al. (2018). Graph Attention Networks. ICLR.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from workbench.models.art_encoder import ART_PAPER, ART_TINY, ENCODER_FIELDS, ARTEncoder
from workbench.models.layers.graph import GATLayer, GCNLayer
from workbench.models.registry import create_model, register_model
from workbench.utils import check_option

logger = logging.getLogger("workbench")

__all__ = [
    "ARTEncoder",
    "OMFAClassifier",
    "OMFA_VARIANTS",
    "ENCODER_FIELDS",
    "create_variant",
    "encoder_parameter_names",
    "param_groups",
    "load_pretrained_encoder",
]

# ----------------------------------------------------------------------------- presets
_CLS_PAPER: dict[str, Any] = dict(
    ART_PAPER,
    d_hidden=256,
    graph_layers=2,
    graph_heads=4,
    cls_layers=2,
    cls_heads=4,
    cls_ffn=512,
    head_dropout=0.5,
)
_CLS_TINY: dict[str, Any] = dict(
    ART_TINY,
    d_hidden=32,
    graph_layers=2,
    graph_heads=4,
    cls_layers=2,
    cls_heads=4,
    cls_ffn=64,
    cls_dropout=0.0,
    head_dropout=0.5,
)


# ----------------------------------------------------------------------------- classifier
@register_model("omfa_classifier", presets={"tiny": _CLS_TINY, "paper": _CLS_PAPER})
class OMFAClassifier(nn.Module):
    """Multivariate ART + GAT classifier.

    Every real channel goes through the shared :class:`ARTEncoder` in one batched call
    (``B * C`` rows, padding channels skipped), ``d_model -> Linear -> d_hidden``, then
    ``graph_layers`` graph layers on the fully connected channel graph (padding channels masked),
    each followed by ELU, a post-norm Transformer encoder over the channel axis (key padding
    mask), the mean over the real channels, Dropout and a Linear head.

    Parameters
    ----------
    n_outputs : int
        Number of classes.
    d_hidden : int
        Width after the projection, of the graph layers and of the channel Transformer (256).
    graph : {"gat", "gcn", "none"}
        GAT (the paper), a static GCN (ablation "GCN") or no graph layer (ablation "NoGraph").
    graph_layers, graph_heads : int
        Number of graph layers (2) and GAT heads (4, concatenated: ``d_hidden / heads`` each).
    graph_dropout : float
        Dropout on the GAT attention coefficients (**our default** 0).
    cls_layers, cls_heads, cls_ffn : int
        Channel Transformer depth (2), heads (4) and feed-forward width (**our default** 512).
    cls_dropout : float
        Dropout inside the channel Transformer (**our default** 0.1).
    head_dropout : float
        Dropout before the final Linear (0.5).
    **encoder_fields
        The :data:`ENCODER_FIELDS` of :class:`ARTEncoder` (``d_model``, ``tokenizer``, ...).

    Notes
    -----
    ``forward(x (B, C, T), ch_ids (B, C), rate_id (B,), ch_mask (B, C))`` returns ``logits``
    (B, n_outputs), ``embedding`` (B, d_hidden) (the pooled vector before the head) and
    ``attention``: one (B, heads, C, C) tensor per GAT layer (empty for "gcn" and "none").
    Without positional encodings over channels the logits do not depend on the channel order,
    and padding channels (``ch_mask`` False) do not change them.

    References
    ----------
    .. [1] "One Model for All", Section III-D2, equations (1)-(7).
    """

    def __init__(
        self,
        n_outputs: int = 3,
        d_hidden: int = 256,
        graph: str = "gat",
        graph_layers: int = 2,
        graph_heads: int = 4,
        graph_dropout: float = 0.0,
        cls_layers: int = 2,
        cls_heads: int = 4,
        cls_ffn: int = 512,
        cls_dropout: float = 0.1,
        head_dropout: float = 0.5,
        **encoder_fields: Any,
    ):
        super().__init__()
        check_option("graph", graph, ["gat", "gcn", "none"])
        unknown = sorted(set(encoder_fields) - set(ENCODER_FIELDS))
        if unknown:
            raise TypeError(
                f"OMFAClassifier got unknown argument(s) {unknown}; encoder "
                f"arguments are {list(ENCODER_FIELDS)}."
            )
        self.graph = graph
        self.encoder = ARTEncoder(**encoder_fields)
        self.proj = nn.Linear(self.encoder.d_model, d_hidden)
        if graph == "gat":
            self.graph_layers = nn.ModuleList(
                GATLayer(
                    d_hidden,
                    d_hidden,
                    graph_heads,
                    concat=True,
                    dropout=graph_dropout,
                    activation="elu",
                )
                for _ in range(graph_layers)
            )
        elif graph == "gcn":
            self.graph_layers = nn.ModuleList(
                GCNLayer(d_hidden, d_hidden, activation="elu") for _ in range(graph_layers)
            )
        else:
            self.graph_layers = nn.ModuleList()
        layer = nn.TransformerEncoderLayer(
            d_hidden,
            cls_heads,
            cls_ffn,
            cls_dropout,
            activation="gelu",
            batch_first=True,
            norm_first=False,
        )
        self.channel_transformer = nn.TransformerEncoder(
            layer, cls_layers, enable_nested_tensor=False
        )
        self.head_drop = nn.Dropout(head_dropout)
        self.head = nn.Linear(d_hidden, n_outputs)

    def forward(
        self,
        x: torch.Tensor,
        ch_ids: torch.Tensor | None = None,
        rate_id: torch.Tensor | None = None,
        ch_mask: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        if x.dim() != 3:
            raise ValueError(
                f"OMFAClassifier: expected x of shape (B, C, T), got {tuple(x.shape)}."
            )
        B, C, T = x.shape
        for name, t, shape in (
            ("ch_ids", ch_ids, (B, C)),
            ("ch_mask", ch_mask, (B, C)),
            ("rate_id", rate_id, (B,)),
        ):
            if t is not None and tuple(t.shape) != shape:
                raise ValueError(
                    f"OMFAClassifier: expected '{name}' of shape {shape} for x of "
                    f"shape {tuple(x.shape)}, got {tuple(t.shape)}."
                )
        x_flat = x.reshape(B * C, T)  # (B*C, T): every channel is one encoder row
        ids = ch_ids.reshape(B * C) if ch_ids is not None else None
        rates = rate_id.repeat_interleave(C) if rate_id is not None else None  # (B*C,)
        if ch_mask is None:
            emb = self.encoder(x_flat, ids, rates)["embedding"]  # (B*C, d)
        else:
            ch_mask = ch_mask.to(torch.bool)
            if bool((ch_mask.sum(1) == 0).any()):
                raise ValueError(
                    "OMFAClassifier: a window in the batch has no real channel "
                    "(its 'ch_mask' row is all False)."
                )
            keep = ch_mask.reshape(B * C)
            # Only the real channels go through the encoder (one call); padding rows stay zero
            # and never touch the encoder (nor its BatchNorm statistics, if any).
            enc = self.encoder(
                x_flat[keep],
                None if ids is None else ids[keep],
                None if rates is None else rates[keep],
            )["embedding"]
            emb = enc.new_zeros(B * C, enc.shape[-1]).index_put((keep,), enc)  # (B*C, d)
        h = self.proj(emb.view(B, C, -1))  # (B, C, d_hidden)
        attention = []
        for layer in self.graph_layers:
            h, a = layer(h, ch_mask=ch_mask)  # ELU inside the layer, eq. (3)
            if self.graph == "gat":
                attention.append(a)
        pad = None if ch_mask is None else ~ch_mask
        h = self.channel_transformer(h, src_key_padding_mask=pad)  # (B, C, d_hidden)
        if ch_mask is None:
            pooled = h.mean(dim=1)
        else:
            m = ch_mask[..., None].to(h.dtype)  # (B, C, 1)
            pooled = (h * m).sum(1) / m.sum(1)  # mean over real channels, eq. (6)
        logits = self.head(self.head_drop(pooled))  # eq. (7)
        return {"logits": logits, "embedding": pooled, "attention": attention}


# ----------------------------------------------------------------------------- variants
OMFA_VARIANTS: dict[str, dict[str, Any]] = {
    "art_gat": {
        "classifier": {"graph": "gat", "tokenizer": "adaptive"},
        "encoder": {"tokenizer": "adaptive"},
        "pretrained": True,
        "description": "Pre-trained ART encoder + GAT (the full model).",
    },
    "nograph": {
        "classifier": {"graph": "none", "tokenizer": "adaptive"},
        "encoder": {"tokenizer": "adaptive"},
        "pretrained": True,
        "description": "Ablation NoGraph: the GAT layers removed.",
    },
    "gcn": {
        "classifier": {"graph": "gcn", "tokenizer": "adaptive"},
        "encoder": {"tokenizer": "adaptive"},
        "pretrained": True,
        "description": "Ablation GCN: a static fully connected GCN instead of the GAT.",
    },
    "fixed_patch": {
        "classifier": {"graph": "gat", "tokenizer": "fixed"},
        "encoder": {"tokenizer": "fixed"},
        "pretrained": True,
        "description": "Ablation Fixed-Patch Enc.: 16-sample patches instead of the "
        "adaptive tokenizer (pre-train an encoder with the same "
        "'encoder' overrides).",
    },
    "scratch": {
        "classifier": {"graph": "gat", "tokenizer": "adaptive"},
        "encoder": {"tokenizer": "adaptive"},
        "pretrained": False,
        "description": "Baseline From Scratch: the full architecture, random init.",
    },
}
"""The paper's model and ablations. ``classifier``: overrides for ``omfa_classifier``;
``encoder``: overrides for the ``art_encoder`` to pre-train for it; ``pretrained``: whether the
classifier's encoder is initialised from that pre-trained encoder (False = From Scratch)."""


def create_variant(
    variant: str,
    preset: str = "tiny",
    encoder_state_dict: Mapping[str, torch.Tensor] | None = None,
    **overrides: Any,
) -> OMFAClassifier:
    """Build the ``omfa_classifier`` of one :data:`OMFA_VARIANTS` entry.

    A pre-trained variant needs ``encoder_state_dict`` (the weights of an ``art_encoder`` built
    with the same preset, the variant's ``encoder`` overrides and the same ``overrides``); the
    "scratch" variant refuses one, so an ablation cannot silently load weights.
    """
    check_option("variant", variant, list(OMFA_VARIANTS))
    spec = OMFA_VARIANTS[variant]
    model = create_model("omfa_classifier", preset, **{**spec["classifier"], **overrides})
    if spec["pretrained"]:
        if encoder_state_dict is None:
            raise ValueError(
                f"Variant {variant!r} starts from a pre-trained encoder: pass "
                "'encoder_state_dict' (or use variant 'scratch')."
            )
        load_pretrained_encoder(model, encoder_state_dict)
    elif encoder_state_dict is not None:
        raise ValueError(
            f"Variant {variant!r} is trained from scratch; do not pass 'encoder_state_dict'."
        )
    return model


# ----------------------------------------------------------------------------- fine-tuning
def encoder_parameter_names(model: nn.Module) -> list[str]:
    """Names (as in ``model.named_parameters()``) of the pre-trained encoder's parameters."""
    if not isinstance(getattr(model, "encoder", None), ARTEncoder):
        raise ValueError(
            f"{type(model).__name__} has no ARTEncoder attribute 'encoder'; "
            "expected an OMFAClassifier."
        )
    return [f"encoder.{n}" for n, _ in model.encoder.named_parameters()]


def param_groups(
    model: nn.Module, encoder_lr: float = 5e-6, head_lr: float = 1e-4, weight_decay: float = 0.01
) -> list[dict[str, Any]]:
    """Optimizer parameter groups for differential learning rates.

    Returns two groups, ``{"name": "encoder", "lr": encoder_lr}`` for the pre-trained encoder and
    ``{"name": "head", "lr": head_lr}`` for the new layers (projection, graph, channel
    Transformer, head), both with ``weight_decay``; frozen parameters are left out. The paper
    uses 5e-6 and 1e-4 with AdamW (its fine-tuning weight decay is not given: **our default**
    0.01, AdamW's).
    """
    enc_names = set(encoder_parameter_names(model))
    enc, head = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (enc if name in enc_names else head).append(p)
    return [
        {"name": "encoder", "params": enc, "lr": encoder_lr, "weight_decay": weight_decay},
        {"name": "head", "params": head, "lr": head_lr, "weight_decay": weight_decay},
    ]


def _strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = dict(state)
    for prefix in ("module.", "_orig_mod."):  # DDP and torch.compile wrappers
        if out and all(k.startswith(prefix) for k in out):
            out = {k[len(prefix) :]: v for k, v in out.items()}
    if any(k.startswith("encoder.") for k in out):  # a whole classifier: keep its encoder
        out = {k[len("encoder.") :]: v for k, v in out.items() if k.startswith("encoder.")}
    return out


def load_pretrained_encoder(
    classifier: nn.Module, encoder_state_dict: Mapping[str, torch.Tensor], strict: bool = True
) -> dict[str, list[str]]:
    """Load pre-trained ``art_encoder`` weights into ``classifier.encoder``.

    Accepts the state dict of an :class:`ARTEncoder` or of a whole classifier (its ``encoder.``
    keys are used), with or without DDP (``module.``) / ``torch.compile`` (``_orig_mod.``)
    prefixes.

    Parameters
    ----------
    classifier : OMFAClassifier
    encoder_state_dict : mapping
    strict : bool
        Raise when keys are missing or unexpected; otherwise load what matches and log a warning.

    Returns
    -------
    report : dict
        ``{"loaded": [...], "missing": [...], "unexpected": [...]}`` key lists.

    Raises
    ------
    ValueError
        On any shape mismatch (always: it means the encoder was built with other sizes), and on
        missing/unexpected keys with ``strict=True``; the message lists the keys and shapes.
    """
    encoder_parameter_names(classifier)  # raises unless there is an ARTEncoder to load into
    target = classifier.encoder.state_dict()
    state = _strip_prefixes(encoder_state_dict)
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    mismatched = [
        f"{k}: classifier {tuple(target[k].shape)} vs checkpoint {tuple(state[k].shape)}"
        for k in sorted(set(target) & set(state))
        if target[k].shape != state[k].shape
    ]
    if mismatched:
        raise ValueError(
            "load_pretrained_encoder: shape mismatch (was the encoder pre-trained "
            "with another preset or tokenizer?):\n  " + "\n  ".join(mismatched)
        )
    if strict and (missing or unexpected):
        raise ValueError(
            f"load_pretrained_encoder: missing keys {missing}; unexpected keys "
            f"{unexpected} (pass strict=False to load the matching ones)."
        )
    if missing or unexpected:
        logger.warning(
            "load_pretrained_encoder: missing keys %s; unexpected keys %s", missing, unexpected
        )
    classifier.encoder.load_state_dict(
        {k: v for k, v in state.items() if k in target}, strict=False
    )
    loaded = sorted(set(target) & set(state))
    logger.info(
        "Loaded %d pre-trained encoder tensors into %s.", len(loaded), type(classifier).__name__
    )
    return {"loaded": loaded, "missing": missing, "unexpected": unexpected}
