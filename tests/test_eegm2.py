"""EEGM2: parameter counts of the published sizes, every ablation variant (shapes on odd
lengths, overfitting one batch, gradients), the reconstruction objective against a hand
computation, percentile scaling, forward-hook probes and the peak-memory measurement."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workbench.analysis.efficiency import cpu_peak_memory, measure_efficiency
from workbench.evaluation.probes import (
    STATISTICS,
    HookFeatures,
    channel_statistics,
    linear_probe,
    mlp_probe,
)
from workbench.models import create_model, list_models
from workbench.models.eegm2 import EEGM2, EEGM2_VARIANTS, eegm2_variant
from workbench.models.layers.ssm import Mamba1, Mamba2
from workbench.objectives import ReconstructionObjective, percentile_scale, reconstruction_loss

VARIANTS = ["eegm2", "light", "s1", "s2", "s3", "s4", "s5"]  # keys of EEGM2_VARIANTS
RECON_VARIANTS = [v for v in VARIANTS if v != "light"]


def variant_model(name: str, preset: str = "tiny", **kw):
    """The EEGM2 of one ablation variant: plain keyword arguments of the one registered model."""
    return create_model("eegm2", preset, **{**EEGM2_VARIANTS[name]["model"], **kw})



def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def eeg_batch(C=4, T=61, B=2, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(T) / 32.0
    f = torch.rand(B, C, 1, generator=g) * 6 + 1
    phase = torch.rand(B, C, 1, generator=g) * 6
    return torch.sin(2 * math.pi * f * t + phase) + 0.3 * torch.randn(B, C, T, generator=g)


# ---------------------------------------------------------------------------- sizes
def test_paper_preset_parameter_count():
    model = create_model("eegm2", "paper", n_chans=16)
    n = n_params(model)
    print(f"EEGM2 paper preset, 16 channels: {n:,} parameters (published 4,565,144)")
    assert abs(n - 4_565_144) / 4_565_144 <= 0.05
    assert n == 4_565_144  # the authors' layout, exactly


def test_light_parameter_count_and_encoder_subset():
    light = variant_model("light", "paper", n_chans=16)
    n = n_params(light)
    print(f"EEGM2 (Light), 16 channels: {n:,} parameters (published ~0.25 M)")
    assert abs(n - 250_000) / 250_000 <= 0.05
    full = create_model("eegm2", "paper", n_chans=16)
    assert set(light.state_dict()) < set(full.state_dict())


def test_paper_blocks_are_the_published_mamba2():
    model = create_model("eegm2", "paper")
    mixers = [m for m in model.modules() if isinstance(m, Mamba2)]
    assert len(mixers) == 4  # encoder1, mediator, decoder3, decoder2
    assert {(m.d_model, m.d_state, m.d_conv, m.expand, m.headdim) for m in mixers} == {
        (64, 16, 2, 8, 64), (256, 16, 2, 8, 64), (128, 16, 2, 8, 64)}


def test_registry_and_variant_table():
    # one registered model; the ablations are its keyword arguments, not alias models
    assert "eegm2" in list_models() and not any(n.startswith("eegm2_") for n in list_models())
    assert eegm2_variant("s2")[1] == {"l1_weight": 1.0, "spectral_weight": 0.0}
    assert eegm2_variant("eegm2")[1]["spectral_weight"] == 1.0
    s3 = variant_model("s3")
    assert any(isinstance(m, Mamba1) for m in s3.modules())
    assert not any(isinstance(m, Mamba2) for m in s3.modules())
    s4 = variant_model("s4")
    assert isinstance(s4.input_embedding, torch.nn.Conv1d) and s4.block == "mamba1"
    s5 = variant_model("s5")
    assert any(isinstance(m, torch.nn.MultiheadAttention) for m in s5.modules())
    with pytest.raises(ValueError, match="block"):
        create_model("eegm2", "tiny", block="s9")
    with pytest.raises(ValueError, match="variant"):
        eegm2_variant("s9")
    assert set(EEGM2_VARIANTS) == {"eegm2", "s1", "s2", "s3", "s4", "s5", "light"}


# ---------------------------------------------------------------------------- behaviour
@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("T", [5, 37, 64, 101])
def test_forward_shapes_on_any_length(name, T):
    torch.manual_seed(0)
    model = variant_model(name, n_chans=5).eval()
    x = torch.randn(2, 5, T)
    with torch.no_grad():
        out = model(x, ch_ids=None, rate_id=None, ch_mask=None)
    n_tok = math.ceil(T / 8)
    assert out["tokens"].shape == (2, n_tok, 64)
    assert out["embedding"].shape == (2, 64)
    if name == "light":
        assert "recon" not in out
    else:
        assert out["recon"].shape == x.shape
        assert torch.isfinite(out["recon"]).all()


def test_wrong_channel_count_is_an_error():
    with pytest.raises(ValueError, match="16"):
        create_model("eegm2", "tiny")(torch.randn(1, 3, 32))


@pytest.mark.parametrize("name", VARIANTS)
def test_every_parameter_gets_a_gradient(name):
    torch.manual_seed(1)
    model = variant_model(name, n_chans=4, n_outputs=3)
    out = model(eeg_batch())
    loss = out["logits"].square().sum() + out["embedding"].square().sum()
    if "recon" in out:
        loss = loss + out["recon"].square().sum()
    loss.backward()
    missing = [n for n, p in model.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().max() == 0]
    assert not missing


@pytest.mark.parametrize("name", [
    v if v in ("eegm2", "s5") else pytest.param(v, marks=pytest.mark.slow)
    for v in RECON_VARIANTS])  # S1-S4 share these code paths (Mamba-1 in S3/S4): slow marker
def test_overfits_one_batch(name):
    torch.manual_seed(0)
    model = variant_model(name, n_chans=4)
    objective = ReconstructionObjective(**eegm2_variant(name)[1])
    batch = {"x": eeg_batch()}
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(100):
        loss, logs = objective(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(logs["loss"])
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


def test_same_seed_same_model_different_seed_different_model():
    x = eeg_batch(C=16, T=40)
    outs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        with torch.no_grad():
            outs.append(create_model("eegm2", "tiny").eval()(x)["recon"])
    torch.testing.assert_close(outs[0], outs[1])
    assert (outs[0] - outs[2]).abs().max() > 1e-3


def test_to_light_carries_the_encoder():
    torch.manual_seed(2)
    full = create_model("eegm2", "tiny", n_chans=4).eval()
    light = full.to_light().eval()
    x = eeg_batch(T=48)
    with torch.no_grad():
        x3p = full.encode(x)[3]
        torch.testing.assert_close(light(x)["tokens"], x3p.transpose(1, 2))
    assert n_params(light) < n_params(full)


# ---------------------------------------------------------------------------- objective
def test_reconstruction_loss_equals_hand_computation():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 20))
    x_hat = rng.standard_normal((2, 3, 20))
    l1 = np.mean(np.abs(x - x_hat))
    spectral = np.mean(np.abs(np.fft.rfft(x, axis=-1) - np.fft.rfft(x_hat, axis=-1)) ** 2)
    loss, l1_t, spec_t = reconstruction_loss(torch.tensor(x), torch.tensor(x_hat), 0.5, 2.0)
    assert l1_t.item() == pytest.approx(l1, rel=1e-5)
    assert spec_t.item() == pytest.approx(spectral, rel=1e-5)
    assert loss.item() == pytest.approx(0.5 * l1 + 2.0 * spectral, rel=1e-5)
    # padded channels are left out
    mask = np.array([[True, True, False], [True, False, False]])
    err = np.abs(x - x_hat)[mask]  # (3 real channels, 20)
    spec = (np.abs(np.fft.rfft(x, axis=-1) - np.fft.rfft(x_hat, axis=-1)) ** 2)[mask]
    _, l1_m, spec_m = reconstruction_loss(torch.tensor(x), torch.tensor(x_hat),
                                          ch_mask=torch.tensor(mask))
    assert l1_m.item() == pytest.approx(err.mean(), rel=1e-5)
    assert spec_m.item() == pytest.approx(spec.mean(), rel=1e-5)


def test_objective_calls_the_model_and_logs_terms():
    torch.manual_seed(3)
    model = create_model("eegm2", "tiny", n_chans=4).eval()
    batch = {"x": eeg_batch(), "y": torch.tensor([0, 1])}
    loss, logs = ReconstructionObjective(l1_weight=1.0, spectral_weight=0.0)(model, batch)
    with torch.no_grad():
        recon = model(batch["x"])["recon"]
    assert loss.item() == pytest.approx((recon - batch["x"]).abs().mean().item(), rel=1e-5)
    assert set(logs) == {"loss", "l1", "spectral"} and logs["spectral"] > 0
    with pytest.raises(KeyError, match="recon"):
        ReconstructionObjective()(variant_model("light", n_chans=4), batch)
    with pytest.raises(ValueError, match="at least"):
        ReconstructionObjective(0.0, 0.0)


def test_percentile_scale_numpy_and_torch():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 101)).astype(np.float32) * np.array([1, 5, 20, 0])[:, None]
    scaled, scale = percentile_scale(x, 95, return_scale=True)
    expected = np.percentile(np.abs(x), 95, axis=-1, keepdims=True)
    np.testing.assert_allclose(scale[:, :3], expected[:, :3], rtol=1e-6)
    assert np.all(scale[:, 3] == 1.0)  # flat channel left unscaled, no division by zero
    np.testing.assert_allclose(np.percentile(np.abs(scaled[:, :3]), 95, axis=-1), 1.0,
                               rtol=1e-5)
    t_scaled = percentile_scale(torch.from_numpy(x), 95)
    np.testing.assert_allclose(t_scaled.numpy(), scaled, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="'q'"):
        percentile_scale(x, 120)


# ---------------------------------------------------------------------------- probes
def test_hook_features_capture_the_layer_output():
    torch.manual_seed(4)
    model = create_model("eegm2", "tiny", n_chans=4).eval()
    x = eeg_batch(T=64)
    with HookFeatures(model, "encoder3") as hook, torch.no_grad():
        model(x)
        model(x[:1])
    assert len(hook.outputs) == 2 and hook.concat().shape == (3, 64, 16)
    with torch.no_grad():
        torch.testing.assert_close(hook.outputs[0], model.encode(x)[2])
        model(x)
    assert len(hook.outputs) == 2  # removed on exit
    with pytest.raises(ValueError, match="encoder9"):
        HookFeatures(model, "encoder9")


def test_channel_statistics_hand_computation():
    feats = np.arange(2 * 3 * 21, dtype=np.float64).reshape(2, 3, 21) ** 1.5
    stats = channel_statistics(feats, flatten=False)
    assert stats.shape == (2, 3, 9) and len(STATISTICS) == 9
    row = feats[1, 2]
    expected = [row.min(), row.max(), row.mean(), row.std(),
                *np.quantile(row, [0.05, 0.25, 0.5, 0.75, 0.95])]
    np.testing.assert_allclose(stats[1, 2], expected, rtol=1e-6)
    flat = channel_statistics(torch.tensor(feats).transpose(1, 2), time_axis=1)
    np.testing.assert_allclose(flat, stats.reshape(2, 27), rtol=1e-6)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_linear_and_mlp_probes_learn():
    rng = np.random.default_rng(0)
    n = 300
    X = rng.standard_normal((n, 2))
    y_lin = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    y_xor = (X[:, 0] * X[:, 1] > 0).astype(int)
    tr, te = slice(0, 200), slice(200, None)
    lin = linear_probe(X[tr], y_lin[tr], X[te], y_lin[te])
    assert lin.proba.shape == (100, 2)
    np.testing.assert_allclose(lin.proba.sum(1), 1.0, rtol=1e-6)
    assert lin.metrics["balanced_accuracy"] > 0.9
    lin_xor = linear_probe(X[tr], y_xor[tr], X[te], y_xor[te])
    mlp_xor = mlp_probe(X[tr], y_xor[tr], X[te], y_xor[te], hidden=(32, 16), max_iter=500)
    assert mlp_xor.metrics["balanced_accuracy"] > 0.85
    assert lin_xor.metrics["balanced_accuracy"] < 0.7  # a linear probe cannot do XOR
    assert np.array_equal(mlp_xor.pred, mlp_xor.classes[mlp_xor.proba.argmax(1)])


# ---------------------------------------------------------------------------- efficiency
def test_cpu_peak_memory_counts_live_tensor_bytes():
    def work():
        a = torch.ones(1_000_000)  # 4 MB
        b = torch.ones(2_000_000)  # + 8 MB -> 12 MB live
        del a
        c = torch.ones(500_000)  # 10 MB live
        return float(b[0] + c[0])

    peak, result = cpu_peak_memory(work)
    assert result == 2.0
    assert 12_000_000 <= peak < 12_100_000


def test_measure_efficiency_table_and_linear_memory():
    df = measure_efficiency(lambda: EEGM2(n_chans=4, widths=(8, 16, 32), expand=2, headdim=8,
                                          d_state=4, chunk_size=32),
                            n_chans=4, lengths=[128, 1024], warmup=1, repeats=1,
                            backward=True, name="eegm2")
    assert list(df["length"]) == [128, 1024] and (df["status"] == "ok").all()
    assert set(df.columns) >= {"seconds_per_call", "samples_per_ms", "peak_memory_bytes"}
    ratio = df["peak_memory_bytes"].iloc[1] / df["peak_memory_bytes"].iloc[0]
    assert 3 < ratio < 10  # 8x longer input: linear growth, plus constants


def _adapter_case(tmp_path, adapt: bool):
    from workbench import experiments
    from workbench.config import get_profile
    from workbench.methods import get_method

    prof = get_profile("smoke", pretrain_epochs=1, finetune_epochs=1, max_steps_per_epoch=2,
                       synthetic_subjects=2, synthetic_sessions=1, synthetic_trials=4,
                       synthetic_trial_s=4.0)
    m = get_method("eegm2")
    deap = m.load_store("syn_deap", profile=prof, cache_dir=tmp_path / "cache")  # 32 channels
    dreamer = m.load_store("syn_dreamer", profile=prof, cache_dir=tmp_path / "cache")  # 14
    pre = experiments.pretrain(m, [deap], run_dir=tmp_path, profile=prof, seed=0)
    old = m.channel_adapter
    m.channel_adapter = adapt
    try:
        return experiments.finetune(m, dreamer, run_dir=tmp_path, profile=prof, mode="full",
                                    pretrained=pre.out_dir, seeds=[0])
    finally:
        m.channel_adapter = old


@pytest.mark.slow
def test_finetune_on_another_layout_through_the_channel_adapter(tmp_path):
    res = _adapter_case(tmp_path, adapt=True)
    assert len(res.results) == 2 and res.results["balanced_accuracy"].between(0, 1).all()
    from workbench import experiments

    model = experiments.finetuned_model(res.fold_dir(0, res.results["fold"].iloc[0]))
    assert model.adapter.n_in == 14 and model.adapter.n_out == 32


@pytest.mark.slow
def test_another_layout_without_adapter_is_an_actionable_error(tmp_path):
    with pytest.raises(ValueError, match="pre-trained on 32 channels.*syn_dreamer has 14.*"
                                         "channel_adapter"):
        _adapter_case(tmp_path, adapt=False)


def test_adapter_starts_by_copying_shared_channels():
    from workbench.models.layers.heads import ChannelAdapter

    torch.manual_seed(0)
    a = ChannelAdapter.from_names(["Cz", "Fz", "Pz"], ["Fz", "Cz", "Oz"])
    x = torch.randn(2, 3, 16)
    y = a(x)
    torch.testing.assert_close(y[:, 0], x[:, 1])
    torch.testing.assert_close(y[:, 1], x[:, 0])
    torch.testing.assert_close(y[:, 2], x.mean(1))
