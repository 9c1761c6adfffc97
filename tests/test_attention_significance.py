"""A planted class difference in attention is detected; shuffled or uniform attention is not."""

import numpy as np

from workbench.analysis.connectivity import attention_significance


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_planted_difference_is_detected_and_shuffled_is_not():
    rng = np.random.default_rng(0)
    n, c = 80, 6
    labels = np.repeat([0, 1], n // 2)
    logits = rng.normal(0, 0.3, (n, c, c))
    logits[labels == 1, :, 2] += 1.5  # class 1 attends to channel 2
    att = _softmax(logits)
    res = attention_significance(att, labels, n_permutations=200)
    assert res["p_value"] < 0.01 and res["kl_from_uniform"] > 0.01 and not res["uniform"]
    shuffled = attention_significance(att, rng.permutation(labels), n_permutations=200)
    assert shuffled["p_value"] > 0.05
    flat = attention_significance(np.full((n, 2, c, c), 1 / c), labels, n_permutations=50)
    assert flat["uniform"] and abs(flat["kl_from_uniform"]) < 1e-9
    assert abs(flat["max_min_ratio"] - 1) < 1e-9
