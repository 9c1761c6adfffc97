"""Expert-routing analysis: tables from routing outputs, frequencies, top-4 sets, Jaccard,
universal and task-specific experts, all against hand computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.analysis.routing import (
    ROUTING_COLUMNS,
    cramers_v,
    expert_frequencies,
    jaccard_matrix,
    jaccard_permutation,
    mean_pairwise_jaccard,
    mean_routing_weights,
    routing_association,
    routing_summary,
    routing_table,
    routing_timeline,
    task_specific_experts,
    top_experts,
    universal_experts,
)

# Selection counts per dataset (expert: count). Top-4 by count, ties to the lower id:
# A: 0 1 2 3;  B: 0 2 5 6;  C: 0 7 then 1, 2, 6 tie at 2 -> 1 2, so C: 0 7 1 2.
COUNTS = {
    "A": {0: 5, 1: 4, 2: 3, 3: 2, 4: 1},
    "B": {0: 6, 2: 5, 5: 4, 6: 3, 1: 1},
    "C": {0: 4, 7: 4, 1: 2, 2: 2, 6: 2, 3: 1},
}


def toy_table() -> pd.DataFrame:
    rows = []
    for ds, counts in COUNTS.items():
        i = 0
        for expert, n in counts.items():
            for _ in range(n):
                # alternate the two layers; weight 0.5 on each selection
                rows.append({"dataset": ds, "window": i, "layer": i % 2, "step": 0,
                             "channel": -1, "rank": 0, "expert": expert, "weight": 0.5})
                i += 1
    return pd.DataFrame(rows)


def test_frequencies_and_top4_with_ties():
    table = toy_table()
    freq = expert_frequencies(table, n_experts=8)
    assert len(freq) == 3 * 8  # every expert listed, unused ones with count 0
    a = freq[freq.dataset == "A"].set_index("expert")
    np.testing.assert_allclose(a["frequency"].to_numpy(),
                               np.array([5, 4, 3, 2, 1, 0, 0, 0]) / 15)
    top = top_experts(freq, k=4)
    assert top == {"A": [0, 1, 2, 3], "B": [0, 2, 5, 6], "C": [0, 7, 1, 2]}
    per_layer = expert_frequencies(table, n_experts=8, by_layer=True)
    # A's selections in order: 0 x5, 1 x4, 2 x3, 3 x2, 4 -> layer 0 gets rows 0, 2, 4, ... :
    # experts 0, 0, 0, 1, 1, 2, 3, 4  -> counts 3, 2, 1, 1, 1 of 8 selections
    a0 = per_layer[(per_layer.dataset == "A") & (per_layer.layer == 0)].set_index("expert")
    np.testing.assert_allclose(a0["count"].to_numpy()[:5], [3, 2, 1, 1, 1])
    np.testing.assert_allclose(a0["frequency"].sum(), 1.0)
    with pytest.raises(ValueError, match="layer"):
        top_experts(per_layer)
    assert top_experts(per_layer, k=2, layer=0)["A"] == [0, 1]


def test_jaccard_universal_task_specific_hand_computed():
    top = {"A": [0, 1, 2, 3], "B": [0, 2, 5, 6], "C": [0, 7, 1, 2]}
    jac = jaccard_matrix(top)
    # A-B: {0,2} / {0,1,2,3,5,6} = 2/6; A-C: {0,1,2} / {0,1,2,3,7} = 3/5; B-C: {0,2} / 6 = 2/6
    expected = np.array([[1, 1 / 3, 3 / 5], [1 / 3, 1, 1 / 3], [3 / 5, 1 / 3, 1]])
    np.testing.assert_allclose(jac.to_numpy(), expected)
    assert list(jac.index) == ["A", "B", "C"]
    np.testing.assert_allclose(mean_pairwise_jaccard(top), (1 / 3 + 3 / 5 + 1 / 3) / 3)
    assert universal_experts(top) == [0, 2]
    assert task_specific_experts(top) == {"A": [3], "B": [5, 6], "C": [7]}
    assert np.isnan(mean_pairwise_jaccard({"A": [1, 2]}))


def test_summary_pools_layers():
    s = routing_summary(toy_table(), k=4, n_experts=8)
    assert s["top"] == {"A": [0, 1, 2, 3], "B": [0, 2, 5, 6], "C": [0, 7, 1, 2]}
    assert s["universal"] == [0, 2]
    np.testing.assert_allclose(s["mean_jaccard"], (2 / 3 + 3 / 5) / 3)
    one = routing_summary(toy_table(), k=1, layer=1)  # layer 1 of A: 0 0 1 1 2 2 3, tie -> 0
    assert one["top"]["A"] == [0]


def test_routing_table_from_step_and_token_routing():
    # Step-level routing: experts (B=2, N=3, k=2); two layers.
    e = torch.tensor([[[0, 1], [1, 2], [0, 3]], [[2, 3], [2, 0], [1, 0]]])
    w = torch.full(e.shape, 0.25)
    table = routing_table([{"experts": e, "weights": w, "probs": None},
                           {"experts": e.flip(-1), "weights": w}], "A", window_ids=[10, 11])
    assert list(table.columns) == list(ROUTING_COLUMNS)
    assert len(table) == 2 * 2 * 3 * 2 and set(table.channel) == {-1}
    row = table[(table.layer == 0) & (table.window == 11) & (table.step == 1)]
    assert row["expert"].tolist() == [2, 0] and row["rank"].tolist() == [0, 1]
    assert table[(table.layer == 1) & (table.window == 10) & (table.step == 0)].expert.tolist() \
        == [1, 0]
    # Token-level routing (B=1, N=2, C=3, k=1), the last channel is padding.
    et = torch.tensor([[[[0], [1], [2]], [[3], [0], [2]]]])
    tok = routing_table([{"experts": et, "weights": torch.ones(et.shape)}], "B",
                        ch_mask=torch.tensor([[True, True, False]]))
    assert len(tok) == 4 and sorted(tok.expert.tolist()) == [0, 0, 1, 3]
    assert set(tok.channel) == {0, 1}


def test_mean_routing_weights_heatmap_data():
    e = torch.tensor([[[0, 1], [1, 2]]])  # (B=1, N=2, k=2): two decisions
    w = torch.tensor([[[0.6, 0.2], [0.5, 0.3]]])
    table = routing_table([{"experts": e, "weights": w}], "A")
    m = mean_routing_weights(table, n_experts=4)
    # expert 0: 0.6 / 2, expert 1: (0.2 + 0.5) / 2, expert 2: 0.3 / 2, expert 3: 0
    np.testing.assert_allclose(m.loc["A"].to_numpy(), [0.3, 0.35, 0.15, 0.0])


def test_routing_table_of_a_trace_batch():
    from workbench.models import create_model

    torch.manual_seed(0)
    model = create_model("trace", None, patch_len=16, d_model=8, n_layers=2, n_heads=2,
                         expert_hidden=8, n_experts=4, top_k=2, n_queries=1, tf_heads=1,
                         conv_filters=2).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 4, 5 * 16) * 30)
    table = routing_table(out["routing"], "syn")
    assert len(table) == 2 * 3 * 5 * 2  # layers x windows x steps x k
    for layer, r in enumerate(out["routing"]):
        got = table[table.layer == layer].sort_values(["window", "step", "rank"]).expert
        assert got.tolist() == r["experts"].reshape(-1).tolist()
    freq = expert_frequencies(table, n_experts=4)
    np.testing.assert_allclose(freq["frequency"].sum(), 1.0)


# ----------------------------------------------------------------------------- chance levels
def windows_table(prefs: dict[str, list[int]], n_windows: int = 12, seed: int = 0,
                  noise: float = 0.0) -> pd.DataFrame:
    """One decision per window and step (k = 1): dataset ``d`` picks from ``prefs[d]`` (or,
    with probability ``noise``, any of 8 experts)."""
    rng = np.random.default_rng(seed)
    rows = []
    for ds, experts in prefs.items():
        for w in range(n_windows):
            for step in range(4):
                e = rng.integers(8) if rng.random() < noise else experts[(w + step) % len(experts)]
                rows.append({"dataset": ds, "window": w, "layer": 0, "step": step, "channel": -1,
                             "rank": 0, "expert": int(e), "weight": 1.0})
    return pd.DataFrame(rows, columns=list(ROUTING_COLUMNS))


def test_cramers_v_hand_computed():
    assert cramers_v(np.array([[10, 0], [0, 10]])) == pytest.approx(1.0)
    assert cramers_v(np.array([[5, 5], [5, 5]])) == pytest.approx(0.0)
    # chi2 of [[6, 4], [2, 8]]: expected [[4, 6], [4, 6]] -> 1 + 2/3 + 1 + 2/3 = 10/3; n = 20
    assert cramers_v(np.array([[6, 4], [2, 8]])) == pytest.approx(np.sqrt(10 / 3 / 20))
    # an all-zero column is left out
    assert cramers_v(np.array([[6, 4, 0], [2, 8, 0]])) == pytest.approx(np.sqrt(10 / 3 / 20))


def test_association_separates_dataset_specific_from_shared_routing():
    specific = windows_table({"A": [0, 1, 2, 3], "B": [4, 5, 6, 7]})
    res = routing_association(specific, n_permutations=200, seed=0)
    assert res["statistic"] == pytest.approx(1.0)
    assert res["p_value"] == pytest.approx(1 / 201)  # no permutation reaches V = 1
    assert res["null_mean"] < 0.5 and res["n_units"] == 24
    shared = windows_table({"A": [0, 1, 2, 3], "B": [0, 1, 2, 3]})
    res = routing_association(shared, n_permutations=200, seed=0)
    assert res["statistic"] == pytest.approx(0.0, abs=1e-12) and res["p_value"] == 1.0
    # a group that varies inside a unit is refused
    with pytest.raises(ValueError, match="varies inside a unit"):
        routing_association(specific, units=("window",))


def test_jaccard_permutation_against_exchangeable_datasets():
    table = windows_table({"A": [0, 1, 2, 3], "B": [4, 5, 6, 7], "C": [0, 1, 4, 5]})
    res = jaccard_permutation(table, k=4, n_permutations=100, seed=0)
    # hand: A-B 0/8, A-C 2/6, B-C 2/6 -> mean 2/9
    assert res["observed"] == pytest.approx(2 / 9)
    assert res["observed"] == pytest.approx(mean_pairwise_jaccard(
        routing_summary(table)["top"]))
    assert res["null_mean"] > 0.5 and res["p_lower"] < 0.1
    same = jaccard_permutation(windows_table({"A": [0, 1, 2, 3], "B": [0, 1, 2, 3]}), k=4,
                               n_permutations=50, seed=0)
    assert same["observed"] == pytest.approx(1.0) and same["p_lower"] == 1.0


def test_routing_timeline_hand_computed():
    # window 7 starts at 10 s, window 9 at 20 s; patches of 1 s; two layers, k = 2
    rows = [
        ("x", 7, 0, 0, -1, 0, 1, 0.6), ("x", 7, 0, 0, -1, 1, 2, 0.3),
        ("x", 7, 1, 0, -1, 0, 1, 0.5), ("x", 7, 1, 0, -1, 1, 0, 0.4),
        ("x", 9, 0, 1, -1, 0, 3, 0.8), ("x", 9, 0, 1, -1, 1, 1, 0.1),
        ("x", 9, 1, 1, -1, 0, 3, 0.7), ("x", 9, 1, 1, -1, 1, 2, 0.2),
    ]
    table = pd.DataFrame(rows, columns=list(ROUTING_COLUMNS))
    tl = routing_timeline(table, {7: 10.0, 9: 20.0}, patch_s=1.0, n_experts=4)
    assert list(tl.index) == [10.0, 21.0] and list(tl.columns) == [0, 1, 2, 3]
    np.testing.assert_allclose(tl.loc[10.0].to_numpy(), [0.2, 0.55, 0.15, 0.0])
    np.testing.assert_allclose(tl.loc[21.0].to_numpy(), [0.0, 0.05, 0.1, 0.75])
    layer1 = routing_timeline(table, {7: 10.0, 9: 20.0}, patch_s=1.0, n_experts=4, layer=1)
    np.testing.assert_allclose(layer1.loc[21.0].to_numpy(), [0.0, 0.0, 0.2, 0.7])
    with pytest.raises(ValueError, match="start time"):
        routing_timeline(table, {7: 10.0}, patch_s=1.0)
