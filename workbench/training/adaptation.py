"""Adaptation modes of a pre-trained classifier: which parameters train, and LoRA adapters.

One vocabulary for every method (``mode=`` of :func:`workbench.experiments.finetune`):

=========  ==================================================================================
``full``   every parameter trains (differential learning rates where the method has them)
``linear`` the pre-trained encoder is frozen; the new layers (a linear head, a channel
           adapter) train in torch (STELAR's linear probing)
``lora``   low-rank adapters (``peft``) on the encoder's ``nn.Linear`` layers train with the new
           layers; the encoder's own weights stay frozen
``probe``  frozen features + scikit-learn logistic regression (EEGM2's Linear)
``mlp``    frozen features + scikit-learn MLP (EEGM2's Light)
=========  ==================================================================================

References
----------
.. [1] Hu, E. J. et al. (2022). LoRA: Low-Rank Adaptation of Large Language Models. ICLR.
.. [2] Mangrulkar, S. et al. (2022). PEFT: State-of-the-art Parameter-Efficient Fine-Tuning
       methods. https://github.com/huggingface/peft
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from ..utils import get_logger

log = get_logger("adaptation")

__all__ = ["apply_lora", "freeze", "lora_parameter_names", "merge_lora", "trainable_count"]


def freeze(model: nn.Module, names: Iterable[str]) -> int:
    """Set ``requires_grad=False`` on the named parameters; return how many tensors."""
    names = set(names)
    n = 0
    for name, p in model.named_parameters():
        if name in names:
            p.requires_grad_(False)
            n += 1
    return n


def trainable_count(model: nn.Module) -> int:
    """Number of trainable parameter values."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _lora_targets(model: nn.Module, encoder_names: set[str]) -> list[str]:
    """Names of the ``nn.Linear`` modules whose weight belongs to the encoder.

    Linear layers inside ``nn.MultiheadAttention`` (its ``out_proj``) are left out: the module
    reads their weights directly, so an adapter there would never run.
    """
    inside_mha = {f"{n}.{c}" if n else c for n, m in model.named_modules()
                  if isinstance(m, nn.MultiheadAttention) for c, _ in m.named_modules() if c}
    return [n for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and f"{n}.weight" in encoder_names
            and n not in inside_mha]


class _NoMHAFastPath:
    """Forward hooks that turn off PyTorch's fused Transformer inference path while the model
    runs: in eval mode ``nn.TransformerEncoderLayer`` would otherwise read ``linear1.weight``
    directly and skip the adapters."""

    def __init__(self) -> None:
        self.previous: list[bool] = []

    def pre(self, module: nn.Module, args: Any, kwargs: Any = None) -> None:
        self.previous.append(torch.backends.mha.get_fastpath_enabled())
        torch.backends.mha.set_fastpath_enabled(False)

    def post(self, module: nn.Module, args: Any, output: Any) -> None:
        torch.backends.mha.set_fastpath_enabled(self.previous.pop())


def apply_lora(model: nn.Module, encoder_names: Sequence[str], *, r: int = 8,
               alpha: float = 16.0, dropout: float = 0.0) -> list[str]:
    """Inject LoRA adapters (``peft``) into the encoder's linear layers, in place.

    The encoder's own parameters are frozen; the adapters and every parameter outside the
    encoder (head, new layers) train. Returns the adapted module names. Raises ``ValueError``
    when the encoder has no ``nn.Linear`` layer to adapt.
    """
    from peft import LoraConfig, inject_adapter_in_model

    encoder_names = set(encoder_names)
    targets = _lora_targets(model, encoder_names)
    if not targets:
        raise ValueError(f"{type(model).__name__}: the encoder has no nn.Linear layer for LoRA "
                         "adapters; use mode='full' or 'linear'.")
    freeze(model, encoder_names)
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                     bias="none")
    inject_adapter_in_model(cfg, model)
    # peft turns off requires_grad of everything that is not an adapter; the new layers train
    for name, p in model.named_parameters():
        base = name.replace(".base_layer.", ".")
        p.requires_grad_("lora_" in name or base not in encoder_names)
    if any(isinstance(m, nn.TransformerEncoderLayer) for m in model.modules()):
        guard = _NoMHAFastPath()
        model.register_forward_pre_hook(guard.pre)
        model.register_forward_hook(guard.post)
    log.info("LoRA (r=%d) on %d linear layers; %d trainable parameters", r, len(targets),
             trainable_count(model))
    return targets


def lora_parameter_names(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_parameters() if "lora_" in n]


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA adapter into its base layer and put the plain ``nn.Linear`` back, in
    place: the merged model computes the same function with no adapter left."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
    return model
