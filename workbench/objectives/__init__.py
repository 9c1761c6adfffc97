"""Training objectives: ``loss, logs = objective(model, batch)``; the Trainer knows nothing else.

Each objective is an ``nn.Module`` that calls the model on the batch and returns a scalar loss
and a ``dict[str, float]`` of logs (see ``docs/contracts.md``).
"""

from .autoregressive import AutoregressiveObjective, masked_mse, random_token_mask
from .classification import ClassificationObjective
from .contrastive import ContrastiveObjective, nt_xent_loss, random_resized_crop
from .reconstruction import ReconstructionObjective, percentile_scale, reconstruction_loss

__all__ = ["ClassificationObjective", "ContrastiveObjective", "ReconstructionObjective",
           "nt_xent_loss", "percentile_scale", "random_resized_crop", "reconstruction_loss"]
__all__ += ["AutoregressiveObjective", "masked_mse", "random_token_mask"]
