"""Tests of the One Model for All models: GAT/GCN layers, tokenizers, ART encoder, classifier."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from workbench.models import create_model
from workbench.models.layers.embeddings import AdaptiveTokenizer, FixedPatchTokenizer
from workbench.models.layers.graph import GATLayer, GCNLayer, gat_reference
from workbench.models.omfa import (
    OMFA_VARIANTS,
    create_variant,
    encoder_parameter_names,
    load_pretrained_encoder,
    param_groups,
)
from workbench.objectives.classification import ClassificationObjective

GRAPHS = ["gat", "gcn", "none"]


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _batch(B=4, C=5, T=128, n_classes=3, seed=0, n_real=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, T, generator=g)
    ch_ids = torch.stack([torch.randperm(62, generator=g)[:C] for _ in range(B)])
    rate_id = torch.randint(0, 2, (B,), generator=g)
    ch_mask = torch.ones(B, C, dtype=torch.bool)
    if n_real is not None:
        for b, n in enumerate(n_real):
            ch_mask[b, n:] = False
    y = torch.randint(0, n_classes, (B,), generator=g)
    return {"x": x, "ch_ids": ch_ids, "rate_id": rate_id, "ch_mask": ch_mask, "y": y}


# ----------------------------------------------------------------------------- GAT / GCN
@pytest.mark.parametrize("concat", [True, False])
@pytest.mark.parametrize("masked", ["none", "ch_mask", "adj+ch_mask"])
def test_gat_matches_literal_equations(concat, masked):
    torch.manual_seed(0)
    B, C, Fin, heads = 2, 5, 6, 3
    layer = GATLayer(Fin, 6 if concat else 4, heads, concat=concat, activation="elu").double()
    with torch.no_grad():
        layer.bias.normal_()
    h = torch.randn(B, C, Fin, dtype=torch.float64)
    ch_mask = adj = None
    if masked != "none":
        ch_mask = torch.tensor([[1, 1, 1, 0, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    if masked == "adj+ch_mask":
        adj = torch.rand(C, C) > 0.4
        adj.fill_diagonal_(True)
    out, att = layer(h, adj=adj, ch_mask=ch_mask)
    ref_out, ref_att = gat_reference(
        h,
        layer.lin.weight,
        layer.att,
        heads,
        bias=layer.bias,
        concat=concat,
        negative_slope=layer.negative_slope,
        adj=adj,
        ch_mask=ch_mask,
        activation=F.elu,
    )
    torch.testing.assert_close(att, ref_att, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)


def test_gat_attention_rows_sum_to_one_and_padding_gets_none():
    torch.manual_seed(1)
    layer = GATLayer(8, 8, heads=4)
    h = torch.randn(3, 6, 8)
    ch_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 1, 0, 1], [1, 0, 0, 0, 0, 0]]).bool()
    out, att = layer(h, ch_mask=ch_mask)
    assert att.shape == (3, 4, 6, 6)
    sums = att.sum(-1)  # (B, heads, C)
    real = ch_mask[:, None, :].expand_as(sums)
    torch.testing.assert_close(sums[real], torch.ones(int(real.sum())))
    assert (sums[~real] == 0).all()  # padding rows attend to nothing
    assert (att.permute(0, 1, 3, 2)[~real] == 0).all()  # and nobody attends to padding
    assert (out[~ch_mask] == 0).all()
    # Padding content does not leak into real nodes.
    h2 = h.clone()
    h2[~ch_mask] = 1e3 * torch.randn(int((~ch_mask).sum()), 8)
    out2, _ = layer(h2, ch_mask=ch_mask)
    torch.testing.assert_close(out2[ch_mask], out[ch_mask])


def test_gat_without_mask_equals_all_true_mask():
    torch.manual_seed(2)
    layer = GATLayer(4, 8, heads=2)
    h = torch.randn(2, 5, 4)
    a, att_a = layer(h)
    b, att_b = layer(h, ch_mask=torch.ones(2, 5, dtype=torch.bool))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(att_a, att_b)


def test_gcn_fully_connected_averages_real_channels():
    torch.manual_seed(3)
    layer = GCNLayer(4, 3)
    with torch.no_grad():
        layer.bias.normal_()
    h = torch.randn(2, 5, 4)
    ch_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 1, 0, 0]]).bool()
    out, a_norm = layer(h, ch_mask=ch_mask)
    hw = h @ layer.lin.weight.T  # (B, C, 3)
    for b in range(2):
        m = ch_mask[b]
        expected = hw[b, m].mean(0) + layer.bias  # D^-1/2 A D^-1/2 = 1/n on a complete graph
        torch.testing.assert_close(out[b, m], expected.expand(int(m.sum()), 3))
        assert (out[b, ~m] == 0).all()
    assert torch.allclose(a_norm[1, 0, 0, 2], torch.tensor(0.5))
    # A general graph: D^-1/2 A D^-1/2 by hand.
    adj = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 1, 1]]).bool()
    _, a_norm = layer(torch.randn(1, 3, 4), adj=adj)
    d = adj.float().sum(1)
    torch.testing.assert_close(a_norm[0, 0], adj.float() / torch.sqrt(d[:, None] * d[None, :]))


# ----------------------------------------------------------------------------- tokenizers
@pytest.mark.parametrize("T", [256, 400, 77])
def test_adaptive_tokenizer_gives_16_tokens_at_any_rate(T):
    tok = AdaptiveTokenizer(d_model=16, n_tokens=16, conv_channels=(4, 8, 8))
    assert tok(torch.randn(3, T)).shape == (3, 16, 16)


def test_fixed_patch_tokenizer_patches_and_remainder():
    torch.manual_seed(4)
    tok = FixedPatchTokenizer(d_model=8, patch_size=16, remainder="pad")
    x = torch.randn(2, 256)
    out = tok(x)
    assert out.shape == (2, 16, 8)
    torch.testing.assert_close(out[:, 3], tok.proj(x[:, 48:64]))  # token k = patch k
    assert tok(torch.randn(2, 400)).shape == (2, 25, 8)  # 200 Hz: 25 tokens of 80 ms
    x = torch.randn(2, 500)  # 500 = 31 * 16 + 4
    out = tok(x)
    assert out.shape == (2, 32, 8)
    last = torch.cat([x[:, 496:], torch.zeros(2, 12)], dim=1)
    torch.testing.assert_close(out[:, -1], tok.proj(last))  # right zero-padding
    tok.remainder = "drop"
    assert tok(x).shape == (2, 31, 8)
    tok.remainder = "error"
    with pytest.raises(ValueError, match="T=500"):
        tok(x)


# ----------------------------------------------------------------------------- ART encoder
def test_art_encoder_paper_preset_shapes_and_parameter_counts():
    torch.manual_seed(5)
    enc = create_model("art_encoder", "paper")
    enc.eval()
    for T in (256, 400):  # 2 s at 128 Hz and 200 Hz
        out = enc(
            torch.randn(3, 1, T), ch_ids=torch.tensor([0, 5, 61]), rate_id=torch.tensor([0, 1, 1])
        )
        assert out["tokens"].shape == (3, 16, 128)
        assert out["embedding"].shape == (3, 128)
        torch.testing.assert_close(out["embedding"], out["tokens"].mean(1))
    assert enc.pos_embed.shape == (16, 128)
    assert enc.chan_embed.num_embeddings == 62
    d, ffn = 128, 256  # per post-norm layer: attention, FFN, two LayerNorms
    per_layer = (4 * d * d + 4 * d) + (2 * d * ffn + d + ffn) + 4 * d
    assert _n_params(enc.transformer) == 3 * per_layer
    assert enc.transformer.layers[0].self_attn.num_heads == 8
    cls = create_model("omfa_classifier", "paper")
    print(
        f"\nparameters (paper presets): art_encoder {_n_params(enc):,} "
        f"(tokenizer {_n_params(enc.tokenizer):,}, transformer {_n_params(enc.transformer):,}); "
        f"omfa_classifier {_n_params(cls):,} (encoder {_n_params(cls.encoder):,}, "
        f"new layers {_n_params(cls) - _n_params(cls.encoder):,})"
    )
    for variant in ("gcn", "none"):
        m = create_model("omfa_classifier", "paper", graph=variant)
        print(f"omfa_classifier graph={variant}: {_n_params(m):,}")
    fixed = create_model("art_encoder", "paper", tokenizer="fixed")
    print(f"art_encoder tokenizer=fixed: {_n_params(fixed):,}")


def test_art_encoder_fixed_tokenizer_and_id_checks():
    enc = create_model("art_encoder", "tiny", tokenizer="fixed", max_tokens=20)
    out = enc(torch.randn(2, 256), ch_ids=torch.tensor([[1], [2]]), rate_id=torch.tensor([0, 0]))
    assert out["tokens"].shape == (2, 16, 32)
    assert enc(torch.randn(2, 320))["tokens"].shape == (2, 20, 32)
    with pytest.raises(ValueError, match="max_tokens"):
        enc(torch.randn(2, 400))  # 25 tokens > 20 rows of E_pos
    with pytest.raises(ValueError, match="ch_ids"):
        enc(torch.randn(2, 256), ch_ids=torch.tensor([1, 62]))
    with pytest.raises(ValueError, match="single channels"):
        enc(torch.randn(2, 3, 256))


def test_art_encoder_embeddings_matter():
    """E_chan and E_rate change the output: the encoder knows channel and rate."""
    torch.manual_seed(6)
    enc = create_model("art_encoder", "tiny").eval()
    x = torch.randn(2, 256)
    a = enc(x, ch_ids=torch.tensor([3, 3]), rate_id=torch.tensor([0, 0]))["embedding"]
    b = enc(x, ch_ids=torch.tensor([4, 4]), rate_id=torch.tensor([0, 0]))["embedding"]
    c = enc(x, ch_ids=torch.tensor([3, 3]), rate_id=torch.tensor([1, 1]))["embedding"]
    assert not torch.allclose(a, b, atol=1e-4) and not torch.allclose(a, c, atol=1e-4)


@pytest.mark.parametrize("tokenizer", ["adaptive", "fixed"])
def test_art_encoder_overfits_one_batch(tokenizer):
    torch.manual_seed(7)
    enc = create_model("art_encoder", "tiny", tokenizer=tokenizer, dropout=0.0)
    head = torch.nn.Linear(32, 4)
    x, y = torch.randn(8, 1, 256), torch.arange(8) % 4
    ids, rates = torch.arange(8), torch.zeros(8, dtype=torch.long)
    opt = torch.optim.AdamW([*enc.parameters(), *head.parameters()], lr=3e-3)
    losses = []
    for _ in range(80):
        loss = F.cross_entropy(head(enc(x, ids, rates)["embedding"]), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 < losses[0]


@pytest.mark.parametrize("tokenizer", ["adaptive", "fixed"])
def test_art_encoder_every_parameter_gets_a_gradient(tokenizer):
    enc = create_model("art_encoder", "tiny", tokenizer=tokenizer)
    out = enc(torch.randn(4, 1, 256), ch_ids=torch.arange(4), rate_id=torch.tensor([0, 1, 0, 1]))
    out["embedding"].pow(2).sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# ----------------------------------------------------------------------------- classifier
def test_classifier_paper_preset_shapes():
    torch.manual_seed(8)
    cls = create_model("omfa_classifier", "paper", n_outputs=3).eval()
    batch = _batch(B=2, C=4, T=256, n_real=[4, 3])
    out = cls(batch["x"], batch["ch_ids"], batch["rate_id"], batch["ch_mask"])
    assert out["logits"].shape == (2, 3)
    assert out["embedding"].shape == (2, 256)
    assert cls.proj.in_features == 128 and cls.proj.out_features == 256
    assert len(out["attention"]) == 2
    assert all(a.shape == (2, 4, 4, 4) for a in out["attention"])
    gat = cls.graph_layers[0]
    assert (gat.heads, gat.head_dim, gat.out_dim, gat.concat) == (4, 64, 256, True)
    assert len(cls.channel_transformer.layers) == 2
    assert cls.channel_transformer.layers[0].self_attn.num_heads == 4
    assert not cls.channel_transformer.layers[0].norm_first  # post-norm, eqs. (4)-(5)
    assert cls.head_drop.p == 0.5


@pytest.mark.parametrize("graph", GRAPHS)
def test_classifier_variants_outputs(graph):
    cls = create_model("omfa_classifier", "tiny", graph=graph)
    b = _batch(n_real=[5, 4, 3, 2])
    out = cls(b["x"], b["ch_ids"], b["rate_id"], b["ch_mask"])
    assert out["logits"].shape == (4, 3) and torch.isfinite(out["logits"]).all()
    assert len(out["attention"]) == (2 if graph == "gat" else 0)


@pytest.mark.parametrize(
    "graph,tokenizer",
    [
        ("gat", "adaptive"),
        # The ablations cost the same ~2 s each on an idle core; slow on a shared one.
        pytest.param("gcn", "adaptive", marks=pytest.mark.slow),
        pytest.param("none", "adaptive", marks=pytest.mark.slow),
        pytest.param("gat", "fixed", marks=pytest.mark.slow),
    ],
)
def test_classifier_overfits_one_batch(graph, tokenizer):
    torch.manual_seed(9)
    cls = create_model(
        "omfa_classifier",
        "tiny",
        graph=graph,
        tokenizer=tokenizer,
        dropout=0.0,
        cls_dropout=0.0,
        head_dropout=0.0,
    )
    batch = _batch(B=8, C=4, T=128, n_real=[4, 4, 3, 2, 4, 3, 4, 4])
    objective = ClassificationObjective()
    opt = torch.optim.AdamW(cls.parameters(), lr=2e-3)
    first = None
    for _ in range(60):
        loss, logs = objective(cls, batch)
        first = first if first is not None else logs["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    _, logs = objective(cls, batch)
    assert logs["acc"] == 1.0 and logs["loss"] < 0.1 < first


@pytest.mark.parametrize("graph", GRAPHS)
def test_classifier_every_parameter_gets_a_gradient(graph):
    cls = create_model("omfa_classifier", "tiny", graph=graph)
    b = _batch(n_real=[5, 4, 3, 2])
    cls(b["x"], b["ch_ids"], b["rate_id"], b["ch_mask"])["logits"].sum().backward()
    for name, p in cls.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("graph", GRAPHS)
def test_classifier_channel_order_and_padding_invariance(graph):
    torch.manual_seed(10)
    cls = create_model("omfa_classifier", "tiny", graph=graph).eval()
    b = _batch(B=3, C=5, T=128)
    ref = cls(b["x"], b["ch_ids"], b["rate_id"], b["ch_mask"])["logits"]
    perm = torch.randperm(5)
    perm_out = cls(b["x"][:, perm], b["ch_ids"][:, perm], b["rate_id"], b["ch_mask"][:, perm])
    torch.testing.assert_close(perm_out["logits"], ref, rtol=1e-4, atol=1e-5)
    # Interleave 3 padding channels with arbitrary content and ids.
    order = torch.tensor([0, 5, 1, 2, 6, 3, 7, 4])
    x = torch.cat([b["x"], 100 * torch.randn(3, 3, 128)], dim=1)[:, order]
    ids = torch.cat([b["ch_ids"], torch.randint(0, 62, (3, 3))], dim=1)[:, order]
    mask = torch.cat([b["ch_mask"], torch.zeros(3, 3, dtype=torch.bool)], dim=1)[:, order]
    padded = cls(x, ids, b["rate_id"], mask)
    torch.testing.assert_close(padded["logits"], ref, rtol=1e-4, atol=1e-5)
    if graph == "gat":
        att = padded["attention"][0]  # (B, heads, 8, 8): no weight on padding
        assert (att[..., ~mask[0]] == 0).all()


def test_padding_invariance_with_batchnorm_in_training_mode():
    """Padding rows never reach the encoder, so they cannot move BatchNorm statistics."""
    torch.manual_seed(11)
    cls = create_model(
        "omfa_classifier", "tiny", norm="batch", dropout=0.0, cls_dropout=0.0, head_dropout=0.0
    ).train()
    b = _batch(B=2, C=3, T=128)
    ref = cls(b["x"], b["ch_ids"], b["rate_id"], b["ch_mask"])["logits"]
    x = torch.cat([b["x"], 50 * torch.randn(2, 2, 128)], dim=1)
    ids = torch.cat([b["ch_ids"], torch.zeros(2, 2, dtype=torch.long)], dim=1)
    mask = torch.cat([b["ch_mask"], torch.zeros(2, 2, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(cls(x, ids, b["rate_id"], mask)["logits"], ref, rtol=1e-4, atol=1e-5)


def test_classifier_input_errors():
    cls = create_model("omfa_classifier", "tiny")
    b = _batch(B=2, C=3)
    with pytest.raises(ValueError, match="ch_ids"):
        cls(b["x"], b["ch_ids"][:, :2], b["rate_id"], b["ch_mask"])
    mask = b["ch_mask"].clone()
    mask[1] = False
    with pytest.raises(ValueError, match="no real channel"):
        cls(b["x"], b["ch_ids"], b["rate_id"], mask)
    with pytest.raises(ValueError, match="graph"):
        create_model("omfa_classifier", "tiny", graph="gin")
    with pytest.raises(TypeError, match="unknown argument"):
        create_model("omfa_classifier", "tiny", d_modle=8)


# ----------------------------------------------------------------------------- fine-tuning
def test_load_pretrained_encoder_and_key_reports():
    torch.manual_seed(12)
    enc = create_model("art_encoder", "tiny")
    cls = create_model("omfa_classifier", "tiny")
    report = load_pretrained_encoder(cls, enc.state_dict())
    assert not report["missing"] and not report["unexpected"]
    for (n1, p1), (n2, p2) in zip(enc.state_dict().items(), cls.encoder.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)
    # A whole classifier checkpoint (with DDP prefix) loads its encoder part.
    cls2 = create_model("omfa_classifier", "tiny")
    load_pretrained_encoder(cls2, {f"module.{k}": v for k, v in cls.state_dict().items()})
    assert torch.equal(cls2.encoder.pos_embed, enc.pos_embed)
    # Another tokenizer: shapes differ, the error names the tensor.
    with pytest.raises(ValueError, match="pos_embed"):
        load_pretrained_encoder(
            cls, create_model("art_encoder", "tiny", tokenizer="fixed").state_dict()
        )
    partial = {k: v for k, v in enc.state_dict().items() if not k.startswith("rate_embed")}
    partial["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="rate_embed.weight.*extra.weight"):
        load_pretrained_encoder(cls, partial)
    report = load_pretrained_encoder(cls, partial, strict=False)
    assert report["missing"] == ["rate_embed.weight"] and report["unexpected"] == ["extra.weight"]


def test_param_groups_split_encoder_and_new_layers():
    cls = create_model("omfa_classifier", "tiny")
    groups = param_groups(cls, encoder_lr=5e-6, head_lr=1e-4, weight_decay=0.0)
    enc_ids = {id(p) for p in cls.encoder.parameters()}
    assert {id(p) for p in groups[0]["params"]} == enc_ids
    assert not enc_ids & {id(p) for p in groups[1]["params"]}
    assert sum(len(g["params"]) for g in groups) == len(list(cls.parameters()))
    assert (groups[0]["lr"], groups[1]["lr"]) == (5e-6, 1e-4)
    assert all(n.startswith("encoder.") for n in encoder_parameter_names(cls))
    opt = torch.optim.AdamW(groups)
    assert [g["lr"] for g in opt.param_groups] == [5e-6, 1e-4]
    with pytest.raises(ValueError, match="no ARTEncoder"):
        param_groups(create_model("art_encoder", "tiny"))


def test_variants():
    enc = create_model("art_encoder", "tiny").state_dict()
    fixed = create_model("art_encoder", "tiny", **OMFA_VARIANTS["fixed_patch"]["encoder"])
    assert set(OMFA_VARIANTS) == {"art_gat", "nograph", "gcn", "fixed_patch", "scratch"}
    for name, spec in OMFA_VARIANTS.items():
        state = None
        if spec["pretrained"]:
            state = fixed.state_dict() if name == "fixed_patch" else enc
        model = create_variant(name, "tiny", encoder_state_dict=state)
        assert model.graph == spec["classifier"]["graph"]
        if state is not None:
            assert torch.equal(model.encoder.pos_embed, state["pos_embed"])
    with pytest.raises(ValueError, match="pre-trained"):
        create_variant("art_gat", "tiny")
    with pytest.raises(ValueError, match="scratch"):
        create_variant("scratch", "tiny", encoder_state_dict=enc)


def test_same_seed_same_model_different_seed_different():
    b = _batch(B=2, C=3)

    def logits(seed):
        torch.manual_seed(seed)
        m = create_model("omfa_classifier", "tiny").eval()
        return m(b["x"], b["ch_ids"], b["rate_id"], b["ch_mask"])["logits"]

    torch.testing.assert_close(logits(0), logits(0))
    assert not torch.allclose(logits(0), logits(1))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_classifier_bf16_on_gpu_matches_fp32():
    torch.manual_seed(13)
    cls = create_model("omfa_classifier", "tiny").cuda().eval()
    b = {k: v.cuda() for k, v in _batch(n_real=[5, 4, 3, 2]).items()}
    ref = cls(b["x"], b["ch_ids"], b["rate_id"], b["ch_mask"])["logits"]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = cls(b["x"], b["ch_ids"], b["rate_id"], b["ch_mask"])["logits"]
    torch.testing.assert_close(out.float(), ref, rtol=5e-2, atol=5e-2)
