"""Class-weighted cross entropy and the balanced weights of a fold (imbalanced classes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from workbench.objectives.classification import ClassificationObjective


class _Logits(torch.nn.Module):
    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x, **kw):
        return {"logits": self.logits}


def test_weighted_loss_is_the_weighted_mean_by_hand():
    torch.manual_seed(0)
    logits = torch.randn(6, 3)
    y = torch.tensor([0, 1, 2, 1, -1, 0])
    w = torch.tensor([0.5, 2.0, 1.0])
    loss, _ = ClassificationObjective(class_weight=w)(_Logits(logits), {"x": logits, "y": y})
    lab = y >= 0
    nll = -F.log_softmax(logits, 1)[lab].gather(1, y[lab, None])[:, 0]
    expected = (w[y[lab]] * nll).sum() / w[y[lab]].sum()
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-7)
    # equal weights: the plain mean
    plain, _ = ClassificationObjective()(_Logits(logits), {"x": logits, "y": y})
    same, _ = ClassificationObjective(class_weight=[3.0, 3.0, 3.0])(_Logits(logits),
                                                                     {"x": logits, "y": y})
    torch.testing.assert_close(plain, same, rtol=1e-6, atol=1e-7)


def test_bad_class_weight_is_named():
    with pytest.raises(ValueError, match="class_weight"):
        ClassificationObjective(class_weight=[1.0, 0.0])


def test_balanced_weights_of_a_fold(tmp_path):
    import pandas as pd

    from workbench.data.datasets import WindowDataset
    from workbench.data.store import WindowStore
    from workbench.experiments.finetune import _balanced

    y = np.array([0] * 30 + [1] * 10)
    index = pd.DataFrame({"dataset": "d", "subject": "1", "session": "0", "recording": "r",
                          "trial": np.arange(40), "start": np.arange(40) * 10,
                          "start_s": np.arange(40) / 12.8, "label": y})
    store = WindowStore.from_arrays(tmp_path / "s", np.zeros((40, 2, 8), np.float32), index,
                                    ["Cz", "Pz"], 128.0, dataset="d",
                                    label_names={0: "a", 1: "b"})
    obj = _balanced(ClassificationObjective(), WindowDataset(store), 2)
    torch.testing.assert_close(obj.class_weight, torch.tensor([40 / 60, 40 / 20]))
    with pytest.raises(ValueError, match="cross-entropy"):
        _balanced(torch.nn.Identity(), None, 2)
