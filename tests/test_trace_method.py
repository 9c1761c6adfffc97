"""The Trace method on the platform: data layout, channel order, horizons that fit the windows,
per-dataset fine-tuning settings, the classifier head, the paper's numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.config import get_profile
from workbench.experiments import METRICS
from workbench.methods import get_method
from workbench.models import create_model
from workbench.models.layers.moe import SwiGLU, grouped_experts

SMALL = dict(patch_len=50, d_model=16, n_layers=2, n_heads=2, expert_hidden=16, n_experts=6,
             top_k=2, n_queries=2, tf_heads=2, conv_filters=2, conv_stride=8)


class _Store:
    """What the method reads of a store: its name and window length."""

    def __init__(self, dataset: str, n_times: int):
        self.dataset, self.n_times = dataset, n_times


@pytest.fixture(scope="module")
def m():
    return get_method("trace")


def test_windows_per_dataset(m):
    smoke = get_profile("smoke")
    assert m.sfreq == 200.0 and m.window_s == 5.0
    assert m.dataset_window_s("eegmat", smoke) == 5.0
    assert m.dataset_window_s("eegmmidb", smoke) == 4.0  # PhysioNet-MI: 4 s (Table 8)
    assert m.dataset_window_s("syn_deap", smoke) == 5.0  # 10 s trials
    short = get_profile("smoke", synthetic_trial_s=4.5)
    assert m.dataset_window_s("syn_deap", short) == 4.0  # no longer than a trial, whole patches


def _batch(B=2, C=5, N=4, P=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, N * P, generator=g) * 30
    ids = torch.stack([torch.randperm(40, generator=g)[:C] for _ in range(B)])
    return x, ids


def test_channels_are_ordered_by_id_whatever_the_input_order():
    torch.manual_seed(0)
    enc = create_model("trace", None, **SMALL).encoder.eval()
    x, ids = _batch()
    p = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        a = enc(x, ch_ids=ids)
        b = enc(x[:, p], ch_ids=ids[:, p])
        plain = enc(x)
    # the same channels in another input order: the same tokens, in that order
    torch.testing.assert_close(b["tokens"], a["tokens"][:, p], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b["embedding"], a["embedding"], atol=1e-5, rtol=1e-5)
    for ra, rb in zip(a["routing"], b["routing"]):
        assert torch.equal(ra["experts"], rb["experts"])
    # ordering by ids changes what MS-ChPE sees (ids here are not in input order)
    assert not torch.allclose(plain["tokens"], a["tokens"], atol=1e-4)
    # "input" keeps the order given
    enc.channel_order = "input"
    with torch.no_grad():
        torch.testing.assert_close(enc(x, ch_ids=ids)["tokens"], plain["tokens"])


def test_padding_goes_last_and_changes_nothing():
    torch.manual_seed(0)
    enc = create_model("trace", None, **SMALL).encoder.eval()
    x, ids = _batch(B=1, C=4)
    mask = torch.tensor([[True, False, True, True]])
    perm = enc.channel_permutation(ids, mask)
    assert perm[0, -1] == 1  # the padding channel sorts last
    y = x.clone()
    y[:, 1] = 1e3  # whatever the padding holds
    with torch.no_grad():
        a, b = enc(x, ch_ids=ids, ch_mask=mask), enc(y, ch_ids=ids, ch_mask=mask)
    real = mask[0]
    torch.testing.assert_close(a["tokens"][:, real], b["tokens"][:, real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a["embedding"], b["embedding"], atol=1e-5, rtol=1e-5)


def test_stream_with_channel_ids_equals_full_forward():
    torch.manual_seed(0)
    enc = create_model("trace", None, **SMALL).encoder.eval()
    x, ids = _batch(B=2, C=5, N=3)
    with torch.no_grad():
        full = enc(x, ch_ids=ids)
        stream = enc.stream(ch_ids=ids)
        steps = [stream.step(x[:, :, t * 50:(t + 1) * 50]) for t in range(3)]
    for t, s in enumerate(steps):
        torch.testing.assert_close(s["tokens"], full["tokens"][:, :, t], atol=1e-5, rtol=1e-4)
        assert torch.equal(s["routing"][0]["experts"][:, 0], full["routing"][0]["experts"][:, t])


def test_horizons_without_targets_are_dropped(m):
    vocab = None
    model, spec, obj = m.build_pretrain("trace", "tiny", vocab, [_Store("a", 800)])  # 4 patches
    assert model.horizons == (1, 2) and spec["overrides"]["horizons"] == (1, 2)
    model, spec, _ = m.build_pretrain("trace", "tiny", vocab, [_Store("a", 1000)])  # 5 patches
    assert model.horizons == (1, 2, 4) and "horizons" not in spec["overrides"]
    with pytest.raises(ValueError, match="no target"):
        m.build_pretrain("trace", "tiny", vocab, [_Store("a", 200)])
    with pytest.raises(ValueError, match="patch_len=400"):
        m.build_pretrain("patch_400", "tiny", vocab, [_Store("a", 1000)])
    assert obj.balance_weight == pytest.approx(0.01)
    assert m.build_pretrain("no_balance", "tiny", vocab, [_Store("a", 1000)])[2].balance_weight == 0


def test_finetune_settings_per_dataset(m):
    paper, smoke = get_profile("paper"), get_profile("smoke")
    mat, other = _Store("eegmat", 1000), _Store("something_else", 1000)
    cfg = m.finetune_config(paper, mat)
    row = m.finetune_row("eegmat")
    assert (cfg.lr, cfg.weight_decay, cfg.batch_size) == (row.lr, row.weight_decay,
                                                           row.batch_size)
    assert m.finetune_row("something_else") == m.finetune_row("default")
    assert m.finetune_config(paper, other).batch_size == m.finetune_row("default").batch_size
    assert m.finetune_config(smoke, mat).lr == m.smoke_finetune_lr
    clf, spec = m.build_classifier("trace", "tiny", mat, None, 2, None)
    assert spec["overrides"]["head_dropout"] == row.dropout
    assert clf.head[0].p == row.dropout
    lin, _ = m.build_classifier("trace", "tiny", mat, None, 2, None, head="linear")
    assert isinstance(lin.head, torch.nn.Linear)
    assert m.selection_metric(2) == "auc_pr" and m.selection_metric(5) == "cohen_kappa"
    assert m.default_mode == "full" and not m.variants["scratch"].pretrained


def test_token_head_ignores_padding_channels():
    torch.manual_seed(0)
    clf = create_model("trace_classifier", None, n_outputs=3, **SMALL).eval()
    x, ids = _batch(B=2, C=4)
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    y = x.clone()
    y[0, 3] = -500.0
    with torch.no_grad():
        a = clf(x, ch_ids=ids, ch_mask=mask)
        b = clf(y, ch_ids=ids, ch_mask=mask)
        single = clf(x[:1, :3], ch_ids=ids[:1, :3])
    torch.testing.assert_close(a["logits"], b["logits"], atol=1e-5, rtol=1e-5)
    # a padded window is classified as the same window without its padding
    torch.testing.assert_close(a["logits"][:1], single["logits"], atol=1e-5, rtol=1e-5)
    assert a["embedding"].shape == (2, 16)


def test_idle_experts_get_zero_gradients_when_training():
    torch.manual_seed(0)
    experts = torch.nn.ModuleList(SwiGLU(8, 8) for _ in range(4))
    x = torch.randn(3, 2, 8)
    idx = torch.tensor([[0, 1], [1, 0], [0, 1]])  # experts 2 and 3 unused
    grouped_experts(x, idx, torch.full((3, 2), 0.5), experts).sum().backward()
    for e in (2, 3):
        assert all(p.grad is not None and not p.grad.any() for p in experts[e].parameters())
    assert any(p.grad.any() for p in experts[0].parameters())


def test_paper_numbers(m):
    table = m.paper_table()
    assert len(table) > 60
    assert table["value"].between(0, 1).all() and table["metric"].isin(METRICS).all()
    assert table["variant"].isin(list(m.variants)).all() and table["source"].str.len().gt(0).all()
    assert not table.duplicated(["variant", "dataset", "metric"]).any()
    faced = table.set_index(["variant", "dataset", "metric"])["value"]
    assert faced[("trace", "FACED", "balanced_accuracy")] == pytest.approx(0.6352)
    assert faced[("vanilla_moe", "SEED-V", "balanced_accuracy")] == pytest.approx(0.3843)
    # the routing analysis (Tables 20-21) lost every number: nothing invented for it
    assert "no_balance" not in set(table["variant"])
    names = set(m.variants)
    assert {"trace", "non_moe", "vanilla_moe", "mean_temporal", "no_shared", "no_chpe",
            "queries_1", "queries_2", "horizons_1", "horizons_1_2", "time_only", "fft_only",
            "sum_fusion", "no_balance", "scratch"} <= names
    assert np.all([v.model or v.objective or not v.pretrained or k == "trace"
                   for k, v in m.variants.items()])  # each variant is one switch
