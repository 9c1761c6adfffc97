"""Training objectives: ``loss, logs = objective(model, batch)``; the Trainer knows nothing else.

Each objective is an ``nn.Module`` that calls the model on the batch and returns a scalar loss
and a dict of logs, each a float or a detached 0-d tensor (preferred: the Trainer reads them only
at log intervals, so the training loop does not wait for the GPU every step; see ``docs/contracts.md``).
"""

from .classification import ClassificationObjective
from .contrastive import ContrastiveObjective, nt_xent_loss, random_resized_crop
from .forecasting import ForecastingObjective, forecasting_loss
from .reconstruction import ReconstructionObjective, percentile_scale, reconstruction_loss

__all__ = ["ClassificationObjective", "ContrastiveObjective", "ReconstructionObjective",
           "nt_xent_loss", "percentile_scale", "random_resized_crop", "reconstruction_loss"]
__all__ += ["ForecastingObjective", "forecasting_loss"]
