"""EEG foundation-model workbench.

Data flows one way: files -> Recording -> preprocessing -> WindowStore -> Dataset ->
model + objective -> Trainer -> checkpoints + metrics -> analysis -> figures + report.
"""

import logging

__version__ = "0.1.0"

logging.getLogger("workbench").addHandler(logging.NullHandler())
