"""Benchmark suites: every method and the classic baselines on published protocols of public
recordings, with the published numbers beside ours (``workbench benchmark SUITE``, notebook
``11_benchmark``).

* :mod:`.suite` - suite definitions (YAML data files) and the published numbers (CSV).
* :mod:`.run` - :func:`run_suite`: pre-training on the training subjects, linear probe and full
  fine-tuning of every method, the DE / EEGNet / ShallowConvNet baselines, tidy tables.
* :mod:`.plots` - :func:`plot_suite`: ours against the published numbers, chance marked.
"""

from .plots import plot_suite
from .run import BASELINES, SuiteResult, data_folder, run_suite, suite_store
from .suite import (
    Suite,
    SuiteDataMissing,
    list_suites,
    load_suite,
    published_numbers,
    subject_range,
)

__all__ = ["BASELINES", "Suite", "SuiteDataMissing", "SuiteResult", "data_folder", "list_suites",
           "load_suite",
           "plot_suite", "published_numbers", "run_suite", "subject_range", "suite_store"]
