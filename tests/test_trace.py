"""Trace: causality, per-step routing, reference twins, balance loss, streaming, objective,
ablation switches and encoder transfer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from workbench.models import create_model
from workbench.models.layers.csta import CSTA, attend_ref
from workbench.models.layers.moe import (
    CTRFFN,
    SwiGLU,
    TemporalFormer,
    balance_loss,
    grouped_experts,
    grouped_experts_ref,
)
from workbench.models.layers.multiscale_patch import MultiScaleChannelPE, TimeFrequencyPatchEncoder
from workbench.models.layers.rope import RotaryEmbedding
from workbench.models.trace import TRACE_ABLATIONS, TraceModel, load_pretrained_encoder
from workbench.objectives.forecasting import (
    ForecastingObjective,
    forecast_targets,
    forecasting_loss,
)

P = 32  # patch length of the test models (the paper's 200 works the same, only slower)
SMALL = dict(patch_len=P, d_model=16, n_layers=2, n_heads=2, expert_hidden=16, n_experts=4,
             top_k=2, n_shared=1, n_queries=2, tf_heads=2, conv_filters=2, conv_stride=4)
TOL = dict(rtol=1e-5, atol=1e-5)


def small_model(**kw) -> TraceModel:
    torch.manual_seed(0)
    return create_model("trace", None, **{**SMALL, **kw}).eval()


def window(B=2, C=5, N=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, N * P, generator=g) * 30  # microvolts
    ch_mask = torch.ones(B, C, dtype=torch.bool)
    ch_mask[1, -2:] = False  # the second window has two padding channels
    return x, ch_mask


# ----------------------------------------------------------------------------- causality
def test_csta_is_causal_and_fast_matches_ref():
    torch.manual_seed(0)
    attn = CSTA(16, n_heads=4, n_kv_heads=2)
    x = torch.randn(2, 5, 3, 16)  # (B, N, C, d)
    ch_mask = torch.tensor([[True, True, True], [True, True, False]])
    y = attn(x, ch_mask)
    x2 = x.clone()
    x2[:, 3] += torch.randn(2, 3, 16)  # perturb step 3
    y2 = attn(x2, ch_mask)
    torch.testing.assert_close(y2[:, :3], y[:, :3], **TOL)
    assert (y2[:, 3:] - y[:, 3:]).abs().max() > 1e-3  # later steps do see it
    x3 = x.clone()
    x3[1, :, 2] += 5.0  # a padding channel is never a key: real channels unchanged
    torch.testing.assert_close(attn(x3, ch_mask)[1, :, :2], y[1, :, :2], **TOL)
    attn.impl = "ref"
    torch.testing.assert_close(attn(x, ch_mask), y, **TOL)


def test_temporalformer_causal_fast_ref_and_step():
    torch.manual_seed(0)
    tf = TemporalFormer(16, n_queries=3, n_heads=2)
    x = torch.randn(2, 6, 4, 16) * 3  # large scores exercise the running max
    ch_mask = torch.tensor([[True] * 4, [True, False, True, False]])
    z = tf(x, ch_mask)  # (B, N, d)
    torch.testing.assert_close(tf.forward_ref(x, ch_mask), z, **TOL)
    x2 = x.clone()
    x2[:, 4] = torch.randn(2, 4, 16)
    z2 = tf(x2, ch_mask)
    torch.testing.assert_close(z2[:, :4], z[:, :4], **TOL)
    assert (z2[:, 4] - z[:, 4]).abs().max() > 1e-4
    state: dict = {}
    steps = torch.stack([tf.step(x[:, t], state, ch_mask) for t in range(6)], dim=1)
    torch.testing.assert_close(steps, z, **TOL)


def test_whole_model_is_causal():
    model = small_model()
    x, ch_mask = window()
    out = model(x, ch_mask=ch_mask)
    x2 = x.clone()
    x2[:, :, 3 * P:4 * P] += torch.randn(2, 5, P) * 50  # perturb patch 3
    out2 = model(x2, ch_mask=ch_mask)
    torch.testing.assert_close(out2["tokens"][:, :, :3], out["tokens"][:, :, :3], **TOL)
    for h in (1, 2, 4):
        torch.testing.assert_close(out2["forecast"][h][:, :, :3], out["forecast"][h][:, :, :3],
                                   **TOL)
    for r, r2 in zip(out["routing"], out2["routing"]):
        assert torch.equal(r["experts"][:, :3], r2["experts"][:, :3])
        torch.testing.assert_close(r2["probs"][:, :3], r["probs"][:, :3], **TOL)
    assert (out2["tokens"][:, :, 3:] - out["tokens"][:, :, 3:]).abs().max() > 1e-3


def test_padding_channels_change_nothing_real():
    model = small_model()
    x, ch_mask = window()
    out = model(x, ch_mask=ch_mask)
    x2 = x.clone()
    x2[1, -2:] = torch.randn(2, x.shape[-1]) * 100
    out2 = model(x2, ch_mask=ch_mask)
    torch.testing.assert_close(out2["tokens"][1, :3], out["tokens"][1, :3], **TOL)
    torch.testing.assert_close(out2["embedding"], out["embedding"], **TOL)
    loss = ForecastingObjective()
    torch.testing.assert_close(loss(model, {"x": x2, "ch_mask": ch_mask})[0],
                               loss(model, {"x": x, "ch_mask": ch_mask})[0], **TOL)


# ----------------------------------------------------------------------------- routing
def _manual_ffn(ffn: CTRFFN, x: torch.Tensor, idx: torch.Tensor, w: torch.Tensor):
    """Shared expert plus the weighted chosen experts, written per (b, t, c) token."""
    B, N, C, _ = x.shape
    y = ffn.shared(x).clone()
    for b in range(B):
        for t in range(N):
            for c in range(C):
                sel = idx[b, t] if idx.dim() == 3 else idx[b, t, c]
                gw = w[b, t] if w.dim() == 3 else w[b, t, c]
                for e, g in zip(sel.tolist(), gw):
                    y[b, t, c] = y[b, t, c] + g * ffn.experts[e](x[b, t, c])
    return y


def test_one_expert_set_per_step_and_not_for_vanilla():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 6, 16)  # (B, N, C, d)
    ffn = CTRFFN(16, 8, n_experts=6, top_k=2, n_queries=2, tf_heads=2)
    y, info = ffn(x)
    assert info["experts"].shape == (2, 4, 2)  # one choice per step, for all its channels
    torch.testing.assert_close(y, _manual_ffn(ffn, x, info["experts"], info["weights"]), **TOL)
    torch.manual_seed(0)
    van = CTRFFN(16, 8, n_experts=6, top_k=2, router="token")
    y, info = van(x)
    assert info["experts"].shape == (2, 4, 6, 2)
    sets = info["experts"].sort(-1).values  # (B, N, C, k)
    assert (sets != sets[:, :, :1]).any(-1).any()  # some step routes its channels differently
    torch.testing.assert_close(y, _manual_ffn(van, x, info["experts"], info["weights"]), **TOL)


def test_grouped_experts_match_per_token_reference():
    torch.manual_seed(0)
    experts = torch.nn.ModuleList(SwiGLU(8, 12) for _ in range(5))
    x = torch.randn(7, 3, 8, requires_grad=True)  # 7 units of 3 tokens
    idx = torch.tensor([[0, 1], [1, 0], [4, 1], [1, 4], [0, 4], [1, 0], [4, 0]])  # 2, 3 unused
    gate = torch.rand(7, 2, requires_grad=True)
    fast = grouped_experts(x, idx, gate, experts)
    ref = grouped_experts_ref(x, idx, gate, experts)
    torch.testing.assert_close(fast, ref, **TOL)
    params = [x, gate, *experts.parameters()]
    gf = torch.autograd.grad(fast.square().sum(), params, allow_unused=True,
                             materialize_grads=True)
    gr = torch.autograd.grad(ref.square().sum(), params, allow_unused=True,
                             materialize_grads=True)
    for a, b in zip(gf, gr):
        torch.testing.assert_close(a, b, **TOL)


def test_balance_loss_hand_computed():
    probs = torch.tensor([[0.5, 0.3, 0.1, 0.1],
                          [0.1, 0.6, 0.2, 0.1],
                          [0.4, 0.4, 0.1, 0.1],
                          [0.3, 0.1, 0.2, 0.4]], requires_grad=True)
    idx = torch.tensor([[0, 1], [1, 2], [0, 1], [3, 0]])
    # f = counts / (U k) = [3, 3, 1, 1] / 8; P = column means = [1.3, 1.4, 0.6, 0.7] / 4
    # E * sum f P = 4 * (3*1.3 + 3*1.4 + 0.6 + 0.7) / 32 = 4 * 9.4 / 32 = 1.175
    loss = balance_loss(probs, idx)
    torch.testing.assert_close(loss, torch.tensor(1.175))
    (grad,) = torch.autograd.grad(loss, probs)  # d/dp[u, i] = E f_i / U, f has no gradient
    torch.testing.assert_close(grad[0], torch.tensor([3, 3, 1, 1]) / 8.0)
    # Only decisions 0 and 3: f = [2, 1, 0, 1] / 4, P = [0.8, 0.4, 0.3, 0.5] / 2
    # 4 * (1.6 + 0.4 + 0 + 0.5) / 8 = 1.25
    valid = torch.tensor([True, False, False, True])
    torch.testing.assert_close(balance_loss(probs, idx, valid), torch.tensor(1.25))
    uniform = balance_loss(torch.full((4, 4), 0.25), torch.tensor([[0], [1], [2], [3]]))
    torch.testing.assert_close(uniform, torch.tensor(1.0))


def test_model_reference_twin_matches():
    x, ch_mask = window()
    fast = small_model()
    ref = small_model(impl="ref")
    ref.load_state_dict(fast.state_dict())
    a, b = fast(x, ch_mask=ch_mask), ref(x, ch_mask=ch_mask)
    torch.testing.assert_close(a["tokens"], b["tokens"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(a["aux_loss"], b["aux_loss"], rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- streaming
@pytest.mark.parametrize("router", ["temporal", "mean", "token"])
def test_streaming_equals_full_forward(router):
    model = small_model(router=router)
    x, ch_mask = window(N=10)  # past the first cache capacity (8 steps)
    with torch.no_grad():
        full = model(x, ch_mask=ch_mask)
        stream = model.encoder.stream(ch_mask)
        for t in range(10):
            out = stream.step(x[:, :, t * P:(t + 1) * P])
            torch.testing.assert_close(out["tokens"], full["tokens"][:, :, t], **TOL)
            for r, rf in zip(out["routing"], full["routing"]):
                assert torch.equal(r["experts"][:, 0], rf["experts"][:, t])
                torch.testing.assert_close(r["weights"][:, 0], rf["weights"][:, t], **TOL)
            if t < 9:  # forecasts of the next patch from steps with a target in the window
                fc = model.forecast(out["tokens"])[1]
                torch.testing.assert_close(fc, full["forecast"][1][:, :, t], **TOL)


# ----------------------------------------------------------------------------- objective
def test_forecast_targets_hand_built():
    patches = torch.arange(5.0)[None, None, :, None].expand(1, 1, 5, 2)  # patch t holds t
    tg = forecast_targets(patches, 2)  # (1, 1, 3, 2, 2)
    assert tg.shape == (1, 1, 3, 2, 2)
    torch.testing.assert_close(tg[0, 0, :, :, 0], torch.tensor([[1.0, 2], [2, 3], [3, 4]]))
    assert forecast_targets(patches, 5).shape[2] == 0
    pred = {1: torch.zeros(1, 1, 5, 1, 2), 8: torch.zeros(1, 1, 5, 8, 2)}
    loss, per_h = forecasting_loss(pred, patches)  # horizon 8 has no target in 5 patches
    assert list(per_h) == [1]
    # Huber(delta 1) of errors 1, 2, 3, 4: 0.5, 1.5, 2.5, 3.5 -> mean 2.0
    torch.testing.assert_close(loss, torch.tensor(2.0))
    with pytest.raises(ValueError, match="at least 9 patches"):
        forecasting_loss({8: pred[8]}, patches)


def test_forecasting_loss_falls_when_overfitting():
    torch.manual_seed(0)
    model = small_model().train()
    g = torch.Generator().manual_seed(0)
    B, C, N = 4, 3, 6
    t = torch.arange(N * P) / P  # time in patches
    freq, phase = torch.rand(B, C, 1, generator=g) * 3 + 1, torch.rand(B, C, 1, generator=g) * 6
    x = 100 * torch.sin(2 * torch.pi * freq * t + phase)  # 100 uV sines: predictable futures
    zero = {h: torch.zeros(B, C, N - h, h, P) for h in (1, 2, 4)}
    baseline = float(forecasting_loss(zero, model.encoder.patchify(x))[0])  # predicting 0
    objective = ForecastingObjective()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(80):
        loss, logs = objective(model, {"x": x})
        first = first or logs
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert set(logs) == {"loss", "forecast", "balance", "h1", "h2", "h4"}
    assert logs["forecast"] < 0.2 * min(first["forecast"], baseline)
    assert abs(logs["loss"] - logs["forecast"] - 0.01 * logs["balance"]) < 1e-4


def test_window_length_must_be_whole_patches():
    model = small_model()
    with pytest.raises(ValueError, match=r"T=100 .*patch_len=32"):
        model(torch.randn(1, 2, 100))


# ----------------------------------------------------------------------------- ablations
@pytest.mark.parametrize("name", sorted(TRACE_ABLATIONS))
def test_every_ablation_builds_and_runs(name):
    spec = TRACE_ABLATIONS[name]
    kw = {**SMALL, **spec.get("model", {}), **spec.get("pretrain", {})}
    torch.manual_seed(0)
    model = create_model("trace", None, **kw)
    patch_len = kw["patch_len"]
    x = torch.randn(2, 3, 5 * patch_len) * 30
    loss, logs = ForecastingObjective(**spec.get("objective", {}))(model, {"x": x})
    assert torch.isfinite(loss)
    loss.backward()
    assert model.encoder.patch_encoder.patch_len == patch_len
    out = model(x)
    assert set(out["forecast"]) == set(kw.get("horizons", (1, 2, 4)))
    if kw.get("ffn") == "dense":
        assert out["routing"] == [] and float(out["aux_loss"]) == 0.0
    else:
        shape = (2, 5, 3, kw["top_k"]) if kw.get("router") == "token" else (2, 5, kw["top_k"])
        assert out["routing"][0]["experts"].shape == shape
        assert out["routing"][0]["probs"].shape[-1] == kw["n_experts"]
    if name == "no_balance_loss":
        assert abs(logs["loss"] - logs["forecast"]) < 1e-6


def test_patch_encoder_one_conv_matches_branch_convs():
    torch.manual_seed(0)
    pe = TimeFrequencyPatchEncoder(40, 8, conv_kernels=(3, 7, 15), conv_filters=3, conv_stride=3)
    p = torch.randn(10, 40)
    torch.testing.assert_close(pe.time_embedding(p), pe.time_embedding_ref(p), **TOL)
    with pytest.raises(ValueError, match="conv_kernels"):
        TimeFrequencyPatchEncoder(40, 8, conv_kernels=(3, 4))


def test_dense_ffn_matches_active_width_and_chpe_switch():
    dense = small_model(ffn="dense")
    assert dense.encoder.blocks[0].ffn.gate.out_features == (2 + 1) * SMALL["expert_hidden"]
    pe = MultiScaleChannelPE(4, ())
    e = torch.randn(1, 2, 3, 4)
    torch.testing.assert_close(pe(e), e)
    with pytest.raises(ValueError, match="chpe_kernels"):
        MultiScaleChannelPE(4, (4,))


# ----------------------------------------------------------------------------- transfer
def test_classifier_loads_pretrained_encoder():
    pre = small_model()
    x, ch_mask = window()
    for head in ("mlp", "linear"):
        clf = create_model("trace_classifier", None, n_outputs=3, n_chans=5, head=head,
                           horizons=(1, 2), **SMALL).eval()
        loaded = load_pretrained_encoder(clf, pre.state_dict())
        assert loaded and not any(k.startswith("heads") for k in loaded)
        out = clf(x, ch_mask=ch_mask)
        assert out["logits"].shape == (2, 3)
        ref = pre(x, ch_mask=ch_mask)
        torch.testing.assert_close(out["tokens"], ref["tokens"], **TOL)  # the same encoder
        if head == "linear":  # a Linear on the pooled tokens
            torch.testing.assert_close(out["embedding"], ref["embedding"], **TOL)
            expected = F.linear(out["embedding"], clf.head.weight, clf.head.bias)
        else:  # first MLP layer on every token, mean over the real channels and steps
            w = ch_mask[:, :, None, None].float()
            pooled = (clf.head_in(ref["tokens"]) * w).sum((1, 2)) / (w.sum((1, 2))
                                                                    * ref["tokens"].shape[2])
            torch.testing.assert_close(out["embedding"], pooled, **TOL)
            expected = clf.head(pooled)
        torch.testing.assert_close(out["logits"], expected, **TOL)
    other = create_model("trace_classifier", None, **{**SMALL, "n_experts": 3})
    with pytest.raises(ValueError, match=r"unexpected keys.*experts\.3.*shape mismatches.*router"):
        load_pretrained_encoder(other, pre.state_dict())
    with pytest.raises(ValueError, match="missing keys"):
        load_pretrained_encoder(clf, {"encoder.norm.weight": torch.ones(16)})


def test_presets_and_seed_reproducibility():
    paper = create_model("trace", "paper")
    enc = paper.encoder
    assert len(enc.blocks) == 8 and enc.d_model == 256 and enc.patch_len == 200
    ffn = enc.blocks[0].ffn
    assert len(ffn.experts) == 16 and ffn.top_k == 2 and ffn.experts[0].gate.out_features == 512
    assert ffn.context.n_queries == 4 and enc.blocks[0].attn.n_heads == 8
    x = torch.randn(1, 2, 2 * 200)
    outs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        outs.append(create_model("trace", "tiny").eval()(x)["embedding"])
    torch.testing.assert_close(outs[0], outs[1])
    assert not torch.allclose(outs[0], outs[2])


def test_csta_temporal_branch_is_rope_attention_per_head():
    torch.manual_seed(0)
    attn = CSTA(16, n_heads=4, n_kv_heads=2)
    x = torch.randn(2, 5, 3, 16)  # (B, N, C, d)
    xt = x.transpose(1, 2).reshape(6, 5, 16)  # one sequence per channel
    q = attn.temporal_q(xt).view(6, 5, 4, 4).transpose(1, 2)  # (M, h, N, e)
    k, v = attn.temporal_kv(xt).view(6, 5, 2, 2, 4).permute(2, 0, 3, 1, 4)  # (M, h_kv, N, e)
    rope = RotaryEmbedding(4)
    k, v = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    o = attend_ref(rope(q), rope(k), v, causal=True)  # (M, h, N, e)
    expected = o.transpose(1, 2).reshape(2, 3, 5, 16).transpose(1, 2)
    torch.testing.assert_close(attn.temporal(x), expected, **TOL)
