"""Tests of the contrastive and classification objectives (NT-Xent, random resized crop)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from workbench.models import create_model
from workbench.objectives.classification import ClassificationObjective
from workbench.objectives.contrastive import (
    ContrastiveObjective,
    crop_params,
    nt_xent_logits,
    nt_xent_loss,
    nt_xent_reference,
    random_resized_crop,
    resized_crop,
    resized_crop_reference,
)


# ----------------------------------------------------------------------------- NT-Xent
@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_nt_xent_matches_loop_and_its_gradient(temperature):
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    # nt_xent_loss computes in float32; compare its value and gradients at float32 precision.
    fast = nt_xent_loss(z1, z2, temperature)
    ref = nt_xent_reference(z1, z2, temperature)
    torch.testing.assert_close(fast.double(), ref, rtol=1e-5, atol=1e-6)
    g_fast = torch.autograd.grad(fast, (z1, z2))
    g_ref = torch.autograd.grad(ref, (z1, z2))
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_nt_xent_hand_computed_values():
    # One sample: the positive is the only candidate, the loss is -log(1) = 0.
    z = torch.tensor([[1.0, 2.0]])
    assert nt_xent_loss(z, -z, 0.1).item() == pytest.approx(0.0, abs=1e-6)
    # Two orthogonal samples, identical views: each anchor sees its positive (cos 1) and two
    # negatives (cos 0): loss = -log(e^{1/t} / (e^{1/t} + 2)).
    t = 0.5
    e = torch.eye(2)
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2))
    assert nt_xent_loss(e, e.clone(), t).item() == pytest.approx(expected, rel=1e-6)
    # Cosine similarity: scaling an embedding does not change the loss.
    z1, z2 = torch.randn(4, 3), torch.randn(4, 3)
    assert nt_xent_loss(z1, z2).item() == pytest.approx(nt_xent_loss(7 * z1, z2).item(), rel=1e-5)
    logits, targets = nt_xent_logits(z1, z2)
    assert torch.isinf(logits.diagonal()).all()
    assert targets.tolist() == [4, 5, 6, 7, 0, 1, 2, 3]


def test_nt_xent_errors():
    with pytest.raises(ValueError, match="same shape"):
        nt_xent_loss(torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="temperature"):
        nt_xent_loss(torch.randn(3, 4), torch.randn(3, 4), temperature=0.0)


# ----------------------------------------------------------------------------- crops
@pytest.mark.parametrize("shape", [(5, 64), (5, 1, 64), (3, 4, 50)])
def test_random_resized_crop_keeps_shape_and_full_scale_is_identity(shape):
    x = torch.randn(*shape)
    assert random_resized_crop(x).shape == x.shape
    assert torch.equal(random_resized_crop(x, min_scale=1.0, max_scale=1.0), x)


@pytest.mark.parametrize("shape", [(6, 40), (6, 2, 40)])
def test_resized_crop_matches_slice_and_interpolate(shape):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=g)
    start, length = crop_params(shape[0], shape[-1], 0.3, 1.0, generator=g)
    torch.testing.assert_close(
        resized_crop(x, start, length), resized_crop_reference(x, start, length)
    )


def test_resized_crop_of_a_ramp_is_a_ramp():
    T = 11
    x = torch.arange(T, dtype=torch.float64)[None].repeat(2, 1)  # x[k] = k
    out = resized_crop(x, torch.tensor([2, 0]), torch.tensor([6, 11]))
    # Crop [2, 7] stretched to 11 samples: 2, 2.5, ..., 7. A full crop is unchanged.
    torch.testing.assert_close(out[0], torch.linspace(2, 7, T, dtype=torch.float64))
    torch.testing.assert_close(out[1], x[1])


def test_crop_params_ranges_and_seeds():
    start, length = crop_params(2000, 100, 0.5, 0.8, generator=torch.Generator().manual_seed(2))
    assert int(length.min()) == 50 and int(length.max()) == 80  # every length is reachable
    assert (start >= 0).all() and (start + length <= 100).all()
    assert int(start.min()) == 0 and int((start + length).max()) == 100
    a = crop_params(10, 100, generator=torch.Generator().manual_seed(3))
    b = crop_params(10, 100, generator=torch.Generator().manual_seed(3))
    c = crop_params(10, 100, generator=torch.Generator().manual_seed(4))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not all(torch.equal(u, v) for u, v in zip(a, c))
    with pytest.raises(ValueError, match="min_scale"):
        crop_params(3, 100, min_scale=0.9, max_scale=0.5)


# ----------------------------------------------------------------------------- objectives
def _sine_windows(n=16, T=128, seed=0):
    """Distinct signals: each window is a sum of two sines with its own frequencies."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(T) / 128.0
    f = 2 + 20 * torch.rand(n, 2, generator=g)
    phase = 2 * math.pi * torch.rand(n, 2, generator=g)
    x = torch.sin(2 * math.pi * f[:, :1] * t + phase[:, :1]) + 0.5 * torch.sin(
        2 * math.pi * f[:, 1:] * t + phase[:, 1:]
    )
    return x[:, None, :]  # (n, 1, T)


def test_contrastive_objective_equals_manual_views():
    torch.manual_seed(5)
    model = create_model("art_encoder", "tiny").eval()
    batch = {
        "x": _sine_windows(8),
        "ch_ids": torch.arange(8)[:, None],
        "rate_id": torch.zeros(8, dtype=torch.long),
    }
    loss, logs = ContrastiveObjective(temperature=0.2, seed=7)(model, batch)
    g = torch.Generator().manual_seed(7)
    v1 = random_resized_crop(batch["x"], 0.5, 1.0, g)
    v2 = random_resized_crop(batch["x"], 0.5, 1.0, g)
    z1 = model(v1, batch["ch_ids"], batch["rate_id"])["embedding"]
    z2 = model(v2, batch["ch_ids"], batch["rate_id"])["embedding"]
    expected = nt_xent_reference(z1.double(), z2.double(), 0.2)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    logits, targets = nt_xent_logits(z1, z2, 0.2)
    assert logs["pos_acc"] == pytest.approx((logits.argmax(1) == targets).float().mean().item())
    assert set(logs) == {"loss", "pos_acc"}


def test_contrastive_pretraining_loss_falls():
    torch.manual_seed(6)
    model = create_model("art_encoder", "tiny", dropout=0.0)
    objective = ContrastiveObjective(temperature=0.1, seed=0)
    batch = {
        "x": _sine_windows(16),
        "ch_ids": torch.zeros(16, 1, dtype=torch.long),
        "rate_id": torch.zeros(16, dtype=torch.long),
    }
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    history = []
    for _ in range(60):
        loss, logs = objective(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(logs)

    def mean(key, part):
        return sum(h[key] for h in part) / len(part)

    assert mean("loss", history[-10:]) < 0.6 * mean("loss", history[:5])
    assert mean("pos_acc", history[-10:]) > mean("pos_acc", history[:5]) + 0.15


def test_classification_objective_ignores_unlabelled_windows():
    torch.manual_seed(8)
    model = create_model("omfa_classifier", "tiny").eval()
    x = torch.randn(5, 3, 64)
    ids = torch.arange(3).repeat(5, 1)
    batch = {
        "x": x,
        "ch_ids": ids,
        "rate_id": torch.zeros(5, dtype=torch.long),
        "ch_mask": torch.ones(5, 3, dtype=torch.bool),
        "y": torch.tensor([0, 2, -1, 1, -1]),
    }
    loss, logs = ClassificationObjective()(model, batch)
    logits = model(x, ids, batch["rate_id"], batch["ch_mask"])["logits"]
    lab = batch["y"] >= 0
    assert loss.item() == pytest.approx(
        F.cross_entropy(logits[lab], batch["y"][lab]).item(), rel=1e-5
    )
    acc = (logits[lab].argmax(1) == batch["y"][lab]).float().mean().item()
    assert logs["acc"] == pytest.approx(acc)
    smooth, _ = ClassificationObjective(label_smoothing=0.1)(model, batch)
    ref = F.cross_entropy(logits[lab], batch["y"][lab], label_smoothing=0.1)
    assert smooth.item() == pytest.approx(ref.item(), rel=1e-5)
    batch["y"] = torch.full((5,), -1)
    loss, logs = ClassificationObjective()(model, batch)
    assert loss.item() == pytest.approx(0.0) and logs["acc"] == pytest.approx(0.0)
