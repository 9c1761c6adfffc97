"""The MNE preprocessing pipeline: Recording -> cleaned Recording -> windows in a WindowStore.

Four modules, read in this order:

* :mod:`~workbench.data.preprocess.recipes` - :class:`PreprocessConfig` and the named recipes;
* :mod:`~workbench.data.preprocess.clean` - :func:`preprocess_recording`, one recording (filters,
  bad channels, ICA + ICLabel, resampling) and its :class:`RecordingReport`;
* :mod:`~workbench.data.preprocess.cache` - cleaned recordings cached by content hash;
* :mod:`~workbench.data.preprocess.pipeline` - :func:`run_pipeline`, the batch over many
  recordings into one store (windowing through :class:`workbench.data.assemble.StoreAssembler`).

References
----------
Pion-Tonachini L., Kreutz-Delgado K., Makeig S. (2019). ICLabel: an automated
electroencephalographic independent component classifier. NeuroImage 198.
"""

from .cache import recording_digest
from .clean import RecordingReport, detect_bad_channels, iclabel_table, preprocess_recording
from .pipeline import PipelineResult, run_pipeline
from .recipes import (
    ICLABEL_CLASSES,
    PIPELINE_VERSION,
    RECIPES,
    WINDOW_FIELDS,
    PreprocessConfig,
    as_config,
    get_recipe,
)

__all__ = ["ICLABEL_CLASSES", "PIPELINE_VERSION", "RECIPES", "WINDOW_FIELDS", "PipelineResult",
           "PreprocessConfig", "RecordingReport", "as_config", "detect_bad_channels",
           "get_recipe", "iclabel_table", "preprocess_recording", "recording_digest",
           "run_pipeline"]
