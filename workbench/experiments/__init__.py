"""Method-agnostic drivers: pre-train, fine-tune or probe under any protocol and mode,
multi-task fine-tuning, ablations, transfer.

The stage notebooks call these with ``method=...``, ``variant=...``, ``protocol=...`` and
``mode=...``; everything method-specific comes from the
:class:`~workbench.methods.base.Method`, and every run lives in the folder of its settings
(:class:`~workbench.runs.RunLayout`), so notebooks that need the same run share it. Results are
tidy pandas tables (one row per fold and seed) that :mod:`workbench.evaluation.metrics`
aggregates.
"""

from .finetune import METRICS, FinetuneResult, extract_features, finetune, selection_metrics
from .multitask import MultiTaskClassifier, RoundRobinLoader, finetune_multitask
from .outputs import collect_outputs, finetuned_model, pretrained_embeddings
from .pretrain import PretrainResult, checkpoint_id, load_pretrained, pretrain, store_id
from .studies import ablation_study, cross_dataset_transfer, paper_comparison

__all__ = [
    "METRICS", "FinetuneResult", "MultiTaskClassifier", "PretrainResult", "RoundRobinLoader",
    "ablation_study", "checkpoint_id", "collect_outputs", "cross_dataset_transfer",
    "extract_features", "finetune", "finetune_multitask", "finetuned_model", "load_pretrained",
    "paper_comparison", "pretrain", "pretrained_embeddings", "selection_metrics", "store_id",
]
