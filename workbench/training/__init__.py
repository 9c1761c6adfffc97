"""Training machinery shared by every method: Trainer, optimiser and schedules, checkpoints,
checkpoint ensembling and torchrun support. The Trainer knows nothing about methods: it calls
``loss, logs = objective(model, batch)``."""

from .checkpoints import (
    CheckpointError,
    TopKCheckpoints,
    build_model_from_checkpoint,
    load_checkpoint,
    remove_stale_temp_files,
    save_checkpoint,
)
from .distributed import DistInfo, cleanup_distributed, init_distributed, unwrap_model
from .ensemble import ensemble_predict_proba, predict_proba
from .optim import (
    build_optimizer,
    build_scheduler,
    lr_factor,
    make_param_groups,
    no_decay_names,
    warmup_steps_for,
)
from .trainer import Trainer, move_to_device, set_loader_epoch

__all__ = [
    "CheckpointError",
    "DistInfo",
    "TopKCheckpoints",
    "Trainer",
    "build_model_from_checkpoint",
    "build_optimizer",
    "build_scheduler",
    "cleanup_distributed",
    "ensemble_predict_proba",
    "init_distributed",
    "load_checkpoint",
    "lr_factor",
    "make_param_groups",
    "move_to_device",
    "no_decay_names",
    "predict_proba",
    "remove_stale_temp_files",
    "save_checkpoint",
    "set_loader_epoch",
    "unwrap_model",
    "warmup_steps_for",
]
