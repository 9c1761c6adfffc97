"""Training objectives: ``loss, logs = objective(model, batch)``; the Trainer knows nothing else.

Each objective is an ``nn.Module`` that calls the model on the batch and returns a scalar loss
and a dict of logs, each a float or a detached 0-d tensor (preferred: the Trainer reads them only
at log intervals, so the training loop does not wait for the GPU every step; see ``docs/contracts.md``).
"""

from .autoregressive import AutoregressiveObjective, masked_mse, random_token_mask
from .classification import ClassificationObjective
from .contrastive import ContrastiveObjective, nt_xent_loss, random_resized_crop
from .forecasting import ForecastingObjective, forecasting_loss
from .reconstruction import ReconstructionObjective, percentile_scale, reconstruction_loss

__all__ = ["AutoregressiveObjective", "ClassificationObjective", "ContrastiveObjective",
           "ForecastingObjective", "ReconstructionObjective", "forecasting_loss", "masked_mse",
           "nt_xent_loss", "percentile_scale", "random_resized_crop", "random_token_mask",
           "reconstruction_loss"]
