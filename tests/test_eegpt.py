"""EEGPT (Yue et al.): decoder layers, ETE, objectives, TEG classifier, generation, scaling fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from workbench.analysis.scaling import fit_power_law
from workbench.models import create_model
from workbench.models.eegpt import EEGPT_SIZES, load_pretrained_encoder
from workbench.models.layers.decoder import DecoderTransformer, attention, attention_ref
from workbench.models.layers.rope import RotaryEmbedding
from workbench.objectives.autoregressive import AutoregressiveObjective, random_token_mask

L_TOK = 16  # samples per token in these tests
SMALL = dict(d_model=32, n_layers=2, n_heads=4, label_dim=8, token_len=L_TOK, n_channels=20)


def _batch(B=3, C=4, N=5, seed=0, pad=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, N * L_TOK, generator=g)
    ch_ids = torch.stack([torch.randperm(20, generator=g)[:C] for _ in range(B)])
    ch_mask = torch.ones(B, C, dtype=torch.bool)
    if pad:
        ch_mask[0, C - 1:] = False
        ch_mask[1, C - 2:] = False
    return {"x": x, "ch_ids": ch_ids, "ch_mask": ch_mask}


def _model(name="eegpt", seed=0, dtype=torch.float32, **kw):
    torch.manual_seed(seed)
    return create_model(name, None, **{**SMALL, **kw}).to(dtype)


# ----------------------------------------------------------------------------- attention
@pytest.mark.parametrize("causal, L, S", [(True, 7, 7), (True, 3, 7), (True, 1, 7),
                                          (False, 7, 7), (False, 2, 5)])
def test_sdpa_attention_equals_plain_twin(causal, L, S):
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, 3, L, 8, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 3, S, 8, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 3, S, 8, generator=g, dtype=torch.float64, requires_grad=True)
    out, ref = attention(q, k, v, causal), attention_ref(q, k, v, causal)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    if causal:  # bottom-right alignment: query i (position S - L + i) never sees key S - L + i + 1
        vv = v.detach().clone()
        vv[:, :, S - L + 1:] += 100.0
        torch.testing.assert_close(attention(q, k, vv, causal)[:, :, 0], out[:, :, 0])


def test_attention_layer_equals_textbook_rope_attention():
    torch.manual_seed(0)
    B, L, d, H = 2, 6, 16, 2
    dec = DecoderTransformer(d, 1, H).double()
    attn = dec.blocks[0].attn
    x = torch.randn(B, L, d, dtype=torch.float64)
    cos, sin = dec.rope.tables(torch.arange(L))
    out = attn(x, cos, sin, causal=True)
    Wq, Wk, Wv = attn.qkv_proj.weight.chunk(3, dim=0)  # Q = X W_Q^T, ...

    def heads(t):
        return t.view(B, L, H, d // H).transpose(1, 2)  # (B, H, L, D)

    q, k, v = heads(x @ Wq.T), heads(x @ Wk.T), heads(x @ Wv.T)
    q, k = RotaryEmbedding(d // H)(q), RotaryEmbedding(d // H)(k)  # the shared RoPE layer
    ref = attention_ref(q, k, v, causal=True).transpose(1, 2).reshape(B, L, d) @ attn.o_proj.weight.T
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-8)


def test_model_sdpa_equals_plain_twin_forward_and_backward():
    model = _model()
    b = _batch()
    outs, grads = {}, {}
    for impl in ("sdpa", "plain"):
        model.zero_grad()
        out = model(b["x"], b["ch_ids"], ch_mask=b["ch_mask"], impl=impl)
        out["pred"].square().mean().backward()
        outs[impl] = out["pred"].detach()
        grads[impl] = [p.grad.clone() for p in model.parameters()]
    torch.testing.assert_close(outs["sdpa"], outs["plain"], rtol=1e-5, atol=1e-6)
    for a, b_ in zip(grads["sdpa"], grads["plain"]):
        torch.testing.assert_close(a, b_, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- ETE
@pytest.mark.parametrize("pos", ["rope", "none"])
@pytest.mark.parametrize("impl", ["sdpa", "plain"])
def test_prediction_from_past_ignores_the_future(pos, impl):
    model = _model(pos=pos).eval()
    b = _batch()
    t = 2  # perturb second t + 1 of every electrode
    x2 = b["x"].clone()
    x2[..., (t + 1) * L_TOK:(t + 2) * L_TOK] += 5.0 * torch.randn(3, 4, L_TOK)
    p1 = model(b["x"], b["ch_ids"], ch_mask=b["ch_mask"], impl=impl)["pred"]
    p2 = model(x2, b["ch_ids"], ch_mask=b["ch_mask"], impl=impl)["pred"]
    torch.testing.assert_close(p2[:, :, :t + 1], p1[:, :, :t + 1], rtol=0, atol=1e-6)
    real = b["ch_mask"]
    assert (p2[:, :, t + 1] - p1[:, :, t + 1]).abs().amax(-1)[real].min() > 1e-3
    # the MAE comparison is bidirectional: the same perturbation reaches the past
    mae = _model(pos=pos, mode="mae").eval()
    q1 = mae(b["x"], b["ch_ids"], ch_mask=real)["pred"]
    q2 = mae(x2, b["ch_ids"], ch_mask=real)["pred"]
    assert (q2[:, :, 0] - q1[:, :, 0]).abs().amax(-1)[real].min() > 1e-4


def test_electrode_label_is_concatenated_not_added():
    model = _model()
    enc = model.encoder
    seen = {}
    enc.decoder.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0]))
    b = _batch(pad=False)
    B, C, N, D = 3, 4, 5, enc.label_dim

    def decoder_input(x, ids):
        model(x, ids)
        return seen["x"].view(B, C, N, -1)  # (B, C, N, d): the first block's input

    tok = decoder_input(b["x"], b["ch_ids"])
    # the label dims hold exactly the label embedding, the same at every second ...
    torch.testing.assert_close(tok[..., :D],
                               enc.label_embed(b["ch_ids"])[:, :, None].expand(B, C, N, D))
    # ... the signal dims exactly the signal embedding of each second
    patches = b["x"].view(B, C, N, L_TOK)
    torch.testing.assert_close(tok[..., D:], enc.signal_embed(patches))
    # other signals leave the label dims untouched, other electrodes the signal dims
    tok_x = decoder_input(torch.randn_like(b["x"]), b["ch_ids"])
    tok_id = decoder_input(b["x"], (b["ch_ids"] + 1) % 20)
    torch.testing.assert_close(tok_x[..., :D], tok[..., :D], rtol=0, atol=0)
    torch.testing.assert_close(tok_id[..., D:], tok[..., D:], rtol=0, atol=0)
    assert (tok_x[..., D:] - tok[..., D:]).abs().min() > 0
    assert (tok_id[..., :D] - tok[..., :D]).abs().amax(-1).min() > 0
    assert tok.shape[-1] == SMALL["d_model"]


def test_padding_electrodes_are_skipped():
    model = _model().eval()
    b = _batch()
    x2 = b["x"].clone()
    x2[~b["ch_mask"]] = 1e3  # junk in the padding rows
    o1 = model(b["x"], b["ch_ids"], ch_mask=b["ch_mask"])
    o2 = model(x2, b["ch_ids"], ch_mask=b["ch_mask"])
    torch.testing.assert_close(o1["pred"], o2["pred"], rtol=0, atol=1e-6)
    torch.testing.assert_close(o1["embedding"], o2["embedding"], rtol=0, atol=1e-6)
    assert o1["tokens"][~b["ch_mask"]].abs().max() == 0


def test_token_length_from_rate_and_errors():
    model = _model(token_s=1.0)
    x = torch.randn(2, 3, 128 * 3)
    rate_128 = torch.zeros(2, dtype=torch.long)  # SAMPLING_RATES[0] = 128 Hz
    out = model(x, rate_id=rate_128)
    assert out["patches"].shape == (2, 3, 3, L_TOK)  # 3 one-second tokens, resampled to 16
    expected = F.interpolate(x.reshape(18, 1, 128), size=L_TOK, mode="linear",
                             align_corners=False).view(2, 3, 3, L_TOK)
    torch.testing.assert_close(out["patches"], expected)
    with pytest.raises(ValueError, match=r"T=100 samples is not a multiple of the token length 16"):
        model(torch.randn(2, 3, 100))
    with pytest.raises(ValueError, match=r"T=300 .* 128 samples"):
        model(torch.randn(2, 3, 300), rate_id=rate_128)
    with pytest.raises(ValueError, match="rate_id"):
        model(x, rate_id=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="ch_ids"):
        model(x[..., :96], ch_ids=torch.full((2, 3), 25))


# ----------------------------------------------------------------------------- objectives
@pytest.mark.parametrize("mode", ["ar", "mae"])
def test_losses_fall_on_one_batch(mode):
    torch.manual_seed(0)
    model = _model(mode=mode, seed=1)
    objective = AutoregressiveObjective()
    t = torch.arange(6 * L_TOK) / L_TOK
    x = torch.stack([torch.sin(2 * np.pi * f * t + ph) for f, ph in
                     [(1.0, 0.0), (2.0, 1.0), (3.0, 2.0), (1.5, 0.5)]]).view(2, 2, -1)
    batch = {"x": x, "ch_ids": torch.tensor([[0, 1], [2, 3]]),
             "ch_mask": torch.ones(2, 2, dtype=torch.bool)}
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss, logs = objective(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(logs["loss"])
    assert set(logs) == {"loss", "mse"}
    assert np.mean(losses[-5:]) < 0.3 * np.mean(losses[:3])


def test_ar_loss_is_next_second_mse_by_hand():
    model = _model().eval()
    b = _batch()
    loss, logs = AutoregressiveObjective()(model, b)
    out = model(b["x"], b["ch_ids"], ch_mask=b["ch_mask"])
    errs = [(out["pred"][i, c, t] - b["x"][i, c, (t + 1) * L_TOK:(t + 2) * L_TOK]).square().mean()
            for i in range(3) for c in range(4) if b["ch_mask"][i, c] for t in range(4)]
    torch.testing.assert_close(loss, torch.stack(errs).mean(), rtol=1e-5, atol=1e-7)
    assert logs["mse"] == pytest.approx(logs["loss"])


def test_random_token_mask_counts():
    m = random_token_mask(3, 4, 10, 0.3, generator=torch.Generator().manual_seed(0))
    assert m.shape == (3, 4, 10) and bool((m.sum(-1) == 3).all())
    assert bool((random_token_mask(2, 2, 3, 0.01).sum(-1) == 1).all())


# ----------------------------------------------------------------------------- generation
@pytest.mark.parametrize("pos", ["rope", "none"])
def test_cached_rollout_equals_recomputing(pos):
    model = _model(pos=pos, dtype=torch.float64).eval()
    b = _batch()
    kw = {"ch_ids": b["ch_ids"], "ch_mask": b["ch_mask"]}
    x = b["x"].double()
    cached = model.generate(x, 6, **kw)
    plain = model.generate(x, 6, use_cache=False, **kw)
    assert cached.shape == (3, 4, 6 * L_TOK)
    torch.testing.assert_close(cached, plain, rtol=1e-10, atol=1e-12)
    # the first forecast second is the model's next-token prediction
    pred = model(x, **kw)["pred"][:, :, -1]
    torch.testing.assert_close(cached[..., :L_TOK], pred, rtol=1e-10, atol=1e-12)
    assert cached[~b["ch_mask"]].abs().max() == 0


def test_decoder_cache_in_chunks_equals_full_pass():
    torch.manual_seed(0)
    dec = DecoderTransformer(16, 2, 2).double().eval()
    x = torch.randn(3, 6, 16, dtype=torch.float64)
    full = dec(x)
    cache = dec.new_cache(3, 6, torch.float64)
    parts = [dec(x[:, a:b], cache=cache) for a, b in [(0, 3), (3, 4), (4, 6)]]
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="max_len"):
        dec(x[:, :1], cache=cache)


# ----------------------------------------------------------------------------- classifier
def _teg_by_hand(h, W, b, ch_mask, slope):
    """e_mn = LeakyReLU(b^T [W h_m || W h_n]), softmax over real n, h'_m = sum alpha W h_n."""
    B, C, _ = h.shape
    out = torch.zeros(B, C, W.shape[0], dtype=h.dtype)
    alpha = torch.zeros(B, C, C, dtype=h.dtype)
    for i in range(B):
        real = [n for n in range(C) if ch_mask[i, n]]
        for m in real:
            e = torch.stack([F.leaky_relu(b @ torch.cat([W @ h[i, m], W @ h[i, n]]), slope)
                             for n in real])
            a = torch.exp(e) / torch.exp(e).sum()
            for j, n in enumerate(real):
                alpha[i, m, n] = a[j]
                out[i, m] += a[j] * (W @ h[i, n])
    return out, alpha


def test_teg_equals_its_equations_and_attention_sums_to_one():
    model = _model("eegpt_classifier", dtype=torch.float64, n_outputs=3, graph_slope=0.1).eval()
    b = _batch()
    h = torch.randn(3, 4, 32, dtype=torch.float64)
    out, att = model.teg(h, ch_mask=b["ch_mask"])
    ref, ref_att = _teg_by_hand(h, model.teg.lin.weight, model.teg.att[0], b["ch_mask"], 0.1)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(att[:, 0], ref_att, rtol=1e-10, atol=1e-12)
    real = b["ch_mask"]
    sums = att[:, 0].sum(-1)  # (B, C)
    torch.testing.assert_close(sums[real], torch.ones(int(real.sum()), dtype=torch.float64))
    assert att[:, 0][~real].abs().max() == 0 and att[:, 0].transpose(1, 2)[~real].abs().max() == 0
    # the whole classifier: embedding = mean over real electrodes of TEG(last ETE token)
    x = b["x"].double()
    res = model(x, b["ch_ids"], ch_mask=real)
    last = model.encoder(x, b["ch_ids"], ch_mask=real)["tokens"][:, :, -1]
    node, _ = _teg_by_hand(last, model.teg.lin.weight, model.teg.att[0], real, 0.1)
    emb = torch.stack([node[i, real[i]].mean(0) for i in range(3)])
    torch.testing.assert_close(res["embedding"], emb, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(res["logits"], model.head(emb), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("pool", ["mean", "attention"])
def test_classifier_serves_any_montage(pool):
    model = _model("eegpt_classifier", n_outputs=2, pool=pool, head="mlp").eval()
    b = _batch(B=2, C=5, pad=False)
    ref = model(b["x"], b["ch_ids"])["logits"]
    # padded to 8 electrodes with junk: same logits
    x8 = torch.cat([b["x"], 1e3 * torch.ones(2, 3, b["x"].shape[-1])], 1)
    ids8 = torch.cat([b["ch_ids"], torch.full((2, 3), 19)], 1)
    mask8 = torch.arange(8)[None].expand(2, 8) < 5
    torch.testing.assert_close(model(x8, ids8, ch_mask=mask8)["logits"], ref, rtol=1e-5, atol=1e-6)
    # electrode order does not matter (no position over electrodes)
    perm = torch.tensor([3, 0, 4, 1, 2])
    torch.testing.assert_close(model(b["x"][:, perm], b["ch_ids"][:, perm])["logits"], ref,
                               rtol=1e-5, atol=1e-6)
    # another montage (3 electrodes) goes through the same model
    assert model(b["x"][:, :3], b["ch_ids"][:, :3])["logits"].shape == (2, 2)


@pytest.mark.parametrize("name, kw", [("eegpt", {}), ("eegpt", {"mode": "mae"}),
                                      ("eegpt_classifier", {"head": "mlp", "pool": "attention"})])
def test_every_parameter_gets_a_gradient(name, kw):
    model = _model(name, **kw)
    b = _batch()
    if name == "eegpt":
        loss, _ = AutoregressiveObjective()(model, b)
    else:
        loss = model(b["x"], b["ch_ids"], ch_mask=b["ch_mask"])["logits"].square().mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().max() == 0]
    assert not missing


def test_load_pretrained_encoder_copies_and_refuses_mismatches():
    pre = _model("eegpt", seed=1)
    cls = _model("eegpt_classifier", seed=2, n_outputs=3)
    report = load_pretrained_encoder(cls, {f"module.{k}": v for k, v in pre.state_dict().items()})
    assert "predictor.weight" not in report["loaded"] and report["loaded"]
    for k, v in cls.encoder.state_dict().items():
        torch.testing.assert_close(v, pre.state_dict()[f"encoder.{k}"], rtol=0, atol=0)
    other = _model("eegpt", d_model=48, label_dim=8)
    with pytest.raises(ValueError, match="shape mismatches"):
        load_pretrained_encoder(cls, other.state_dict())
    state = {k: v for k, v in pre.state_dict().items() if "blocks.1." not in k}
    with pytest.raises(ValueError, match="missing keys"):
        load_pretrained_encoder(cls, state)


def test_seed_reproducibility():
    b = _batch()
    outs = [_model("eegpt_classifier", seed=s)(b["x"], b["ch_ids"], ch_mask=b["ch_mask"])["logits"]
            for s in (0, 0, 1)]
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    assert (outs[0] - outs[2]).abs().max() > 1e-4


# ----------------------------------------------------------------------------- scaling
def test_scaling_fit_recovers_known_exponent():
    rng = np.random.default_rng(0)
    n = np.logspace(4, 9, 8)
    loss = (80.0 * n**-0.3 + 0.5) * (1 + 0.003 * rng.standard_normal(n.size))
    fit = fit_power_law(n, loss)
    assert abs(fit.alpha - 0.3) < 0.03 and abs(fit.c - 0.5) < 0.05 and fit.r2 > 0.999
    np.testing.assert_allclose(fit.predict(n), loss, rtol=0.01)
    with pytest.raises(ValueError, match="at least 3 points"):
        fit_power_law(n[:2], loss[:2])


def test_ladder_parameter_counts_increase():
    counts = []
    for preset in ("xs", "s", "m", "l", "small", "base", "large"):
        with torch.device("meta"):  # no memory for the GPU sizes
            model = create_model("eegpt", preset)
        counts.append(sum(p.numel() for p in model.parameters()))
    assert all(a < b for a, b in zip(counts, counts[1:])), counts
    assert EEGPT_SIZES["paper"] == EEGPT_SIZES["base"]
    assert EEGPT_SIZES["base"]["n_layers"] == 12 and EEGPT_SIZES["base"]["d_model"] == 512
    assert EEGPT_SIZES["tiny"]["n_layers"] == 2 and EEGPT_SIZES["tiny"]["d_model"] == 64
