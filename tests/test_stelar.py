"""Tests of STELAR: criss-cross attention, the pre-training model, its objective and MTPE-GB."""

from __future__ import annotations

import math

import pytest
import torch

from workbench.config import TrainConfig
from workbench.models import create_model
from workbench.models.layers.criss_cross import (
    CrissCrossAttention,
    FullAttention,
    attention_ref,
    criss_cross_attention_ref,
)
from workbench.models.layers.patch_embed import DualBranchPatchEmbed
from workbench.models.stelar import (
    STELAR_VARIANTS,
    load_pretrained_encoder,
    random_patch_mask,
    set_attention_impl,
    stelar_variant,
)
from workbench.objectives.balancing import MTPEGB, mtpe_gb_step
from workbench.objectives.masked import MaskedObjective, ema_momentum, masked_losses
from workbench.training.checkpoints import load_checkpoint
from workbench.training.trainer import Trainer

# A small encoder: 20-sample patches, width 16 (fast on one CPU thread).
SMALL = dict(patch_len=20, dim=16, depth=2, n_heads=2, mlp_ratio=2.0, conv_channels=4,
             conv_kernel=9, conv_stride=5, norm_groups=2, fft_hidden=16, n_channels=12)
SMALL_PRE = dict(SMALL, pred_dim=16, rec_dim=16)


def _model(seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("stelar", "tiny", **{**SMALL_PRE, **kw})


def _batch(B=3, C=5, P=4, seed=0, n_real=None, L=20):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, P * L, generator=g)
    ch_ids = torch.stack([torch.randperm(12, generator=g)[:C] for _ in range(B)])
    ch_mask = torch.ones(B, C, dtype=torch.bool)
    if n_real is not None:
        for b, n in enumerate(n_real):
            ch_mask[b, n:] = False
    return {"x": x, "ch_ids": ch_ids, "ch_mask": ch_mask, "rate_id": torch.zeros(B).long(),
            "y": torch.zeros(B).long()}


def _key_valid(B, C, P, seed=0):
    g = torch.Generator().manual_seed(seed)
    valid = torch.rand(B, C, P, generator=g) > 0.5
    valid[0, :, 1] = False  # a patch step with no valid channel (self-only fallback)
    valid[1, 2, :] = False  # a channel with no valid patch
    return valid


# ----------------------------------------------------------------------------- attention
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("rope", [True, False])
def test_criss_cross_equals_block_masked_full_attention(masked, rope):
    torch.manual_seed(0)
    layer = CrissCrossAttention(16, 4, rope=rope).double()
    x = torch.randn(2, 5, 6, 16, dtype=torch.float64)
    kv = _key_valid(2, 5, 6) if masked else None
    out = layer(x, key_valid=kv)
    ref = criss_cross_attention_ref(layer, x, kv)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    assert torch.isfinite(out).all()


def test_sdpa_path_equals_plain_path():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 6, 16)
    kv = _key_valid(2, 5, 6)
    cc = CrissCrossAttention(16, 2)
    out = cc(x, key_valid=kv)
    cc.impl = "plain"
    torch.testing.assert_close(out, cc(x, key_valid=kv), rtol=1e-5, atol=1e-6)
    fa = FullAttention(16, 2)
    flat, fkv = x.reshape(2, 30, 16), kv.reshape(2, 30) | (torch.arange(30) == 0)
    out = fa(flat, key_valid=fkv, positions=torch.arange(6).repeat(5))
    fa.impl = "plain"
    torch.testing.assert_close(out, fa(flat, key_valid=fkv, positions=torch.arange(6).repeat(5)),
                               rtol=1e-5, atol=1e-6)
    # the whole model, and the patch embedder's matmul path vs Conv1d
    model, batch = _model().eval(), _batch(n_real=[5, 3, 4])
    mask = random_patch_mask(3, 5, 4, 0.5, batch["ch_mask"], torch.Generator().manual_seed(1))
    fast = model(batch["x"], batch["ch_ids"], ch_mask=batch["ch_mask"], mask=mask)
    set_attention_impl(model, "plain")
    for pe in (model.encoder.patch_embed, model.target_encoder.patch_embed):
        pe.impl = "conv"
    plain = model(batch["x"], batch["ch_ids"], ch_mask=batch["ch_mask"], mask=mask)
    for key in ("tokens", "pred", "target", "recon"):
        torch.testing.assert_close(fast[key], plain[key], rtol=1e-4, atol=1e-5)


def test_attention_ref_is_softmax_formula():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 1, 3, 4, dtype=torch.float64) for _ in range(3))
    w = torch.exp(q[0, 0] @ k[0, 0].T / 2.0)  # sqrt(4) = 2
    expected = (w / w.sum(-1, keepdim=True)) @ v[0, 0]
    torch.testing.assert_close(attention_ref(q, k, v)[0, 0], expected, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- masking / leaks
def test_random_patch_mask_exact_ratio_and_no_padding():
    ch_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    m = random_patch_mask(3, 4, 5, 0.5, ch_mask, torch.Generator().manual_seed(0))
    assert m.sum((1, 2)).tolist() == [10, 5, 2]  # round(0.5 * n_real), n_real = 20, 10, 5
    assert not (m & ~ch_mask[:, :, None]).any()
    with pytest.raises(ValueError, match="mask_ratio"):
        random_patch_mask(1, 2, 2, 1.0)


def test_masked_patches_do_not_leak_into_online_encoder():
    model, batch = _model().eval(), _batch()
    mask = random_patch_mask(3, 5, 4, 0.5, generator=torch.Generator().manual_seed(2))
    out = model(batch["x"], batch["ch_ids"], mask=mask)
    x2 = batch["x"].clone().view(3, 5, 4, 20)
    x2[mask] = 50.0 * torch.randn(int(mask.sum()), 20)  # rewrite every masked patch
    out2 = model(x2.view(3, 5, 80), batch["ch_ids"], mask=mask)
    vis = ~mask
    torch.testing.assert_close(out2["tokens"][vis], out["tokens"][vis], rtol=1e-6, atol=1e-6)
    # the predictor and reconstructor read visible tokens and mask tokens only
    torch.testing.assert_close(out2["pred"], out["pred"], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out2["recon"], out["recon"], rtol=1e-6, atol=1e-6)
    assert (out2["target"] - out["target"]).abs().max() > 1e-2  # the teacher sees them


def test_padding_channels_do_not_change_real_channels():
    model, batch = _model().eval(), _batch(n_real=[3, 3, 3])
    mask = random_patch_mask(3, 5, 4, 0.5, batch["ch_mask"], torch.Generator().manual_seed(3))
    out = model(batch["x"], batch["ch_ids"], ch_mask=batch["ch_mask"], mask=mask)
    real = model(batch["x"][:, :3], batch["ch_ids"][:, :3], mask=mask[:, :3])  # no padding
    for key in ("tokens", "pred", "target"):
        torch.testing.assert_close(out[key][:, :3], real[key], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["recon"][:, :3], real["recon"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["embedding"], real["embedding"], rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)
    clf = create_model("stelar_classifier", "tiny", n_outputs=3, **SMALL).eval()
    a = clf(batch["x"], batch["ch_ids"], ch_mask=batch["ch_mask"])
    b = clf(batch["x"][:, :3], batch["ch_ids"][:, :3])
    torch.testing.assert_close(a["logits"], b["logits"], rtol=1e-5, atol=1e-6)


def test_window_not_multiple_of_patch_len_raises():
    with pytest.raises(ValueError, match=r"70 samples .*'patch_len'=20"):
        _model()(torch.randn(1, 2, 70))


# ----------------------------------------------------------------------------- EMA teacher
def test_ema_update_matches_formula_and_ramp():
    model = _model()
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(torch.randn_like(p))
    old = [p.clone() for p in model.target_encoder.parameters()]
    model.update_target(0.9)
    for t, o, s in zip(model.target_encoder.parameters(), old, model.encoder.parameters()):
        torch.testing.assert_close(t, 0.9 * o + 0.1 * s, rtol=1e-6, atol=1e-7)
    assert ema_momentum(0, 100) == pytest.approx(0.996)
    assert ema_momentum(50, 100) == pytest.approx(0.998)
    assert ema_momentum(100, 100) == pytest.approx(1.0)
    assert ema_momentum(25, 100) == pytest.approx(1 - 0.004 * (1 + math.cos(math.pi / 4)) / 2)


@pytest.mark.parametrize("ema", [True, False])
def test_target_encoder_receives_no_gradient(ema):
    model, obj = _model(ema=ema), MaskedObjective(weighting="fixed", w_lat=0.5)
    loss, logs = obj(model, _batch())
    loss.backward()
    assert set(logs) == {"loss", "lat", "rec", "w_lat", "w_rec"}
    assert all(p.grad is not None for p in model.encoder.parameters())
    if ema:
        assert all(not p.requires_grad and p.grad is None
                   for p in model.target_encoder.parameters())
    else:
        assert model.target_encoder is None
    out = model(**{k: v for k, v in _batch().items() if k in ("x", "ch_ids")})
    assert not out["target"].requires_grad


# ----------------------------------------------------------------------------- MTPE-GB
LOSSES = [(1.5, 0.5), (1.0, 0.4), (0.8, 0.35)]  # (lat, rec) validation losses, epochs 1-3


def _hand(rule: str) -> list[tuple[float, float]]:
    # reference (2.0, 1.0): u = (0.25, 0.5), (0.5, 0.6), (0.6, 0.65); c = 0.5
    if rule == "proportional":
        raws = [(0.25 / 0.75, 0.5 / 0.75), (0.5 / 1.1, 0.6 / 1.1), (0.6 / 1.25, 0.65 / 1.25)]
    else:
        raws = [(4 / 6, 2 / 6), (2 / (2 + 1 / 0.6), (1 / 0.6) / (2 + 1 / 0.6)),
                ((1 / 0.6) / (1 / 0.6 + 1 / 0.65), (1 / 0.65) / (1 / 0.6 + 1 / 0.65))]
    w, out = (0.5, 0.5), []
    for r in raws:
        w = (0.5 * r[0] + 0.5 * w[0], 0.5 * r[1] + 0.5 * w[1])
        out.append(w)
    return out


@pytest.mark.parametrize("rule", ["proportional", "inverse"])
def test_mtpe_gb_matches_hand_computation(rule):
    obj = MaskedObjective(weighting="mtpe_gb", rule=rule)
    obj.set_reference({"val_lat": 2.0, "val_rec": 1.0})
    for epoch, ((lat, rec), expected) in enumerate(zip(LOSSES, _hand(rule)), start=1):
        obj.on_epoch_end(None, epoch, {"val_loss": 0.0, "val_lat": lat, "val_rec": rec})
        assert obj.weights() == pytest.approx(expected, rel=1e-12)
    # the weights are buffers: a new objective resumes them exactly
    again = MaskedObjective(weighting="mtpe_gb", rule=rule)
    again.load_state_dict(obj.state_dict())
    assert again.weights() == obj.weights() and again.balancer.has_reference


def test_mtpe_gb_handles_no_progress():
    w, ref = torch.tensor([0.5, 0.5], dtype=torch.float64), torch.tensor([1.0, 1.0]).double()
    worse = torch.tensor([0.5, 1.2], dtype=torch.float64)  # u = (0.5, -0.2) -> (0.5, 1e-3)
    _, raw, u = mtpe_gb_step(w, ref, worse, rule="proportional", u_min=1e-3)
    torch.testing.assert_close(u, torch.tensor([0.5, -0.2]).double())
    torch.testing.assert_close(raw, torch.tensor([0.5 / 0.501, 0.001 / 0.501]).double())
    _, raw, _ = mtpe_gb_step(w, ref, worse, rule="inverse", u_min=1e-3)
    torch.testing.assert_close(raw, torch.tensor([2 / 1002, 1000 / 1002]).double())
    none = torch.tensor([1.1, 1.0], dtype=torch.float64)  # no task progressed: uniform
    for rule in ("proportional", "inverse"):
        new, raw, _ = mtpe_gb_step(w, ref, none, rule=rule)
        torch.testing.assert_close(raw, torch.tensor([0.5, 0.5]).double())
    bal = MTPEGB(("lat", "rec"))
    assert bal.update({"lat": 2.0, "rec": 1.0}) == {"lat": 0.5, "rec": 0.5}  # sets reference
    with pytest.raises(ValueError, match="finite"):
        bal.update({"lat": float("nan"), "rec": 1.0})


# ----------------------------------------------------------------------------- training
def test_both_losses_fall_when_overfitting_a_batch():
    model, batch = _model(), _batch(B=4, C=4, P=4)
    t = torch.arange(80) / 20.0
    freq, phase = torch.tensor([1.0, 2.0, 3.0, 1.5])[:, None, None], torch.rand(4, 4, 1)
    batch["x"] = torch.sin(2 * math.pi * (freq * t + phase))  # (4, 4, 80) predictable patches
    obj = MaskedObjective(weighting="fixed", w_lat=0.5)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    hist = []
    for step in range(1, 31):
        loss, logs = obj(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        obj.on_step_end(model, step, 30)
        hist.append((logs["lat"], logs["rec"]))
    first = [sum(h[i] for h in hist[:5]) / 5 for i in (0, 1)]
    last = [sum(h[i] for h in hist[-5:]) / 5 for i in (0, 1)]
    assert last[0] < 0.7 * first[0], (first, last)
    assert last[1] < 0.7 * first[1], (first, last)


class _Crash(MaskedObjective):
    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.calls = at, 0

    def forward(self, model, batch):
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                raise RuntimeError("simulated crash")
        return super().forward(model, batch)


def test_trainer_updates_mtpe_gb_and_resumes_exactly(tmp_path):
    train = [_batch(seed=s) for s in range(3)]
    val = [_batch(seed=10 + s) for s in range(2)]
    cfg = dict(lr=1e-3, schedule="constant", progress=False, keep_top_k=0, seed=0)
    full, full_obj = _model(), MaskedObjective()
    hist = Trainer(full, full_obj, TrainConfig(epochs=3, **cfg), tmp_path / "a").fit(train, val)
    assert hist["w_lat"].iloc[0] == pytest.approx(0.5)  # epoch 1 trained with w(0)
    assert int(full_obj.balancer.n_updates) == 3
    assert full_obj.weights() != pytest.approx((0.5, 0.5))
    # a run that crashes in epoch 3 and resumes from last.pt (epoch 2) ends the same
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(_model(), _Crash(at=3 * 2 + 2), TrainConfig(epochs=3, **cfg),
                tmp_path / "b").fit(train, val)
    ckpt = load_checkpoint(tmp_path / "b" / "last.pt")
    assert ckpt["epoch"] == 2 and "balancer.weights" in ckpt["objective"]
    resumed, obj = _model(seed=7), MaskedObjective()
    Trainer(resumed, obj, TrainConfig(epochs=3, **cfg), tmp_path / "b").fit(train, val)
    assert obj.weights() == pytest.approx(full_obj.weights(), rel=1e-9)
    for a, b in zip(resumed.state_dict().values(), full.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- classifier
def test_load_pretrained_encoder_round_trip():
    pre, batch = _model(), _batch()
    torch.manual_seed(1)
    clf = create_model("stelar_classifier", "tiny", n_outputs=3, head="mlp", **SMALL)
    wrapped = {f"module.{k}": v for k, v in pre.state_dict().items()}  # DDP prefix
    loaded = load_pretrained_encoder(clf, wrapped)
    assert loaded == sorted(pre.encoder.state_dict())
    torch.testing.assert_close(clf(batch["x"], batch["ch_ids"])["tokens"],
                               pre.encode(batch["x"], batch["ch_ids"])["tokens"])
    load_pretrained_encoder(clf, pre.state_dict(), source="target")
    for a, b in zip(clf.encoder.parameters(), pre.target_encoder.parameters()):
        torch.testing.assert_close(a, b)
    other = create_model("stelar_classifier", "tiny", n_outputs=3, **{**SMALL, "dim": 32})
    with pytest.raises(ValueError, match="shape mismatches.*chan_embed.weight"):
        load_pretrained_encoder(other, pre.state_dict())
    with pytest.raises(ValueError, match="missing keys"):
        load_pretrained_encoder(clf, {"encoder.norm.weight": torch.ones(16)})


def test_classifier_adapter_heads_and_pooling():
    torch.manual_seed(0)
    x = torch.randn(2, 7, 80)
    clf = create_model("stelar_classifier", "tiny", n_outputs=4, n_chans=7, adapter_channels=5,
                       **SMALL)
    out = clf(x)
    assert out["logits"].shape == (2, 4) and out["embedding"].shape == (2, 16)
    assert out["tokens"].shape == (2, 5, 4, 16) and clf.adapter_ids.tolist() == [0, 1, 2, 3, 4]
    vocab = ["Fp1", "Fp2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "Cz", "Pz"]
    named = create_model("stelar_classifier", "tiny", n_outputs=2, n_chans=7,
                         adapter_channels=["Cz", "O1"], channel_vocab=vocab, **SMALL)
    assert named.adapter_ids.tolist() == [10, 8]
    flat = create_model("stelar_classifier", "tiny", n_outputs=2, n_chans=7, n_times=80,
                        pooling="flatten", **SMALL)
    assert flat(x)["embedding"].shape == (2, 7 * 4 * 16)
    with pytest.raises(ValueError, match="expected \\(batch, 7, time\\)"):
        clf(torch.randn(2, 6, 80))
    with pytest.raises(ValueError, match="n_chans"):
        create_model("stelar_classifier", "tiny", adapter_channels=5, **SMALL)


def test_variants_build():
    for name in STELAR_VARIANTS:
        v = stelar_variant(name)
        obj = MaskedObjective(**v["objective"])
        model = _model(**v["model"])
        loss, _ = obj(model, _batch())
        assert torch.isfinite(loss)
    assert MaskedObjective(weighting="fixed", w_lat=1.0).weights() == (1.0, 0.0)
    with pytest.raises(ValueError, match="variant"):
        stelar_variant("nope")


def test_masked_losses_hand_computation():
    mask = torch.tensor([[[True, False]]])  # (1, 1, 2): patch 0 masked
    out = {"mask": mask, "pred": torch.tensor([[[[1.0, 3.0], [9.0, 9.0]]]]),
           "target": torch.zeros(1, 1, 2, 2), "recon": torch.tensor([[[2.0, 2.0, 7.0, 7.0]]]),
           "signal": torch.tensor([[[0.0, 1.0, 0.0, 0.0]]])}
    lat, rec = masked_losses(out, "mse")
    assert float(lat) == pytest.approx((1 + 9) / 2) and float(rec) == pytest.approx((4 + 1) / 2)
    lat, _ = masked_losses(out, "smooth_l1")
    assert float(lat) == pytest.approx((0.5 + 2.5) / 2)


def test_paper_parameter_counts():
    model = create_model("stelar", "paper")
    n_enc = sum(p.numel() for p in model.encoder.parameters())
    n_total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"STELAR paper preset: encoder {n_enc:,} parameters (paper ~112 K), trainable total "
          f"{n_total:,} (paper ~263 K)")
    assert abs(n_enc - 112_000) <= 11_200
    assert abs(n_total - 263_000) <= 26_300
    emb = DualBranchPatchEmbed(200, 64, 25, 49, 25, 5, 64)
    assert emb(torch.randn(1, 2, 400)).shape == (1, 2, 2, 64)
