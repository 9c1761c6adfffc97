"""Pure-PyTorch Mamba-2 / Mamba-1: fast scans against their reference twins, streaming steps
against full forwards, the mamba_ssm parameter layout, and (GPU only) the fused kernels."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from benchmarks.ssd_minimal import ssd_minimal_listing  # the paper's listing: a benchmark peer
from workbench.models.layers import mamba, mamba_backend, ssd, ssm
from workbench.models.layers.ssm import (
    GatedRMSNorm,
    Mamba1,
    Mamba2,
    mamba_ssm_available,
    selective_scan,
    selective_scan_ref,
    ssd_chunked,
    ssd_naive,
)


def ssd_inputs(b, L, h, p, g, n, dtype=torch.float32, seed=0, init=False, D=None):
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)

    x = rnd(b, L, h, p)
    dt = F.softplus(rnd(b, L, h) - 1.0)  # (0, ~3]: realistic step sizes
    A = -(torch.rand(h, generator=gen, dtype=torch.float64) * 4 + 0.25).to(dtype)
    B, C = rnd(b, L, g, n), rnd(b, L, g, n)
    kw = {}
    if init:
        kw["initial_state"] = rnd(b, h, p, n)
    if D == "head":
        kw["D"] = rnd(h)
    elif D == "headdim":
        kw["D"] = rnd(h, p)
    return (x, dt, A, B, C), kw


# b, L, h, p, g, n, chunk
SSD_CASES = [
    (2, 37, 4, 8, 1, 5, 8),  # length not a multiple of the chunk
    (1, 64, 6, 4, 3, 7, 16),  # groups: 2 heads per group
    (3, 5, 2, 3, 2, 4, 16),  # shorter than one chunk
    (2, 50, 8, 16, 4, 8, 1),  # chunk of one step
    (1, 129, 4, 8, 1, 16, 64),  # one step past two chunks
]


@pytest.fixture(params=["auto", "segsum", "one_chunk_blocks"])
def ssd_path(request, monkeypatch):
    """Run a test through each code path of ssd_chunked: the automatic choice (factored form
    where the decays allow it), the explicit decay matrices only, and blocks of one chunk."""
    if request.param == "segsum":
        monkeypatch.setattr(ssd, "_FACTOR_LIMIT", 0.0)
    elif request.param == "one_chunk_blocks":
        monkeypatch.setattr(ssd, "_BLOCK_ELEMENTS", 1)
    return request.param


@pytest.mark.parametrize("case", SSD_CASES)
@pytest.mark.parametrize("init,D", [(False, None), (True, "head"), (True, "headdim")])
def test_ssd_chunked_matches_naive_recurrence(case, init, D, ssd_path):
    b, L, h, p, g, n, Q = case
    args, kw = ssd_inputs(b, L, h, p, g, n, init=init, D=D, seed=L)
    y_ref, s_ref = ssd_naive(*args, Q, return_final_state=True, **kw)
    y, s = ssd_chunked(*args, Q, return_final_state=True, **kw)
    assert y.shape == (b, L, h, p) and s.shape == (b, h, p, n)
    assert (y - y_ref).abs().max().item() <= 1e-4
    assert (s - s_ref).abs().max().item() <= 1e-4
    assert y.abs().max() > 0.1  # not a vacuous comparison


def test_factored_form_is_used_only_where_it_is_exact():
    # moderate decays: the factored block is taken and equals the explicit-matrix block
    (x, dt, A, B, C), _ = ssd_inputs(2, 32, 4, 8, 2, 5, seed=1)
    dt = dt * 0.1
    S0 = torch.randn(2, 4, 8, 5)
    fac = ssd._ssd_block_factored(x, dt, A, B, C, S0, 16, 2)
    ref = ssd._ssd_block_segsum(x, dt, A, B, C, S0, 16, 2)
    assert fac is not None
    torch.testing.assert_close(fac[0], ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fac[1], ref[1], atol=1e-5, rtol=1e-5)
    # in-chunk log-decay of ~ -50 per step: exp(+-rel) would overflow, the block is refused ...
    big = torch.full_like(dt, 12.0)
    assert ssd._ssd_block_factored(x, big, A, B, C, S0, 16, 2) is None
    # ... and ssd_chunked stays exact through the fallback
    torch.testing.assert_close(ssd_chunked(x, big, A, B, C, 16), ssd_naive(x, big, A, B, C),
                               atol=1e-4, rtol=0)


def test_ssd_chunk_size_does_not_change_the_result(ssd_path):
    args, kw = ssd_inputs(2, 100, 4, 8, 2, 6, init=True, D="head", seed=3)
    ys = [ssd_chunked(*args, Q, **kw) for Q in (3, 10, 32, 100, 512)]
    for y in ys[1:]:
        torch.testing.assert_close(y, ys[0], atol=1e-4, rtol=0)


def test_ssd_minimal_listing_matches_naive_recurrence():
    args, kw = ssd_inputs(2, 45, 4, 8, 1, 6, init=True, D="head", seed=5)
    y_ref, s_ref = ssd_naive(*args, 16, return_final_state=True, **kw)
    y, s = ssd_minimal_listing(*args, 16, return_final_state=True, **kw)
    torch.testing.assert_close(y, y_ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(s, s_ref, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="one group"):
        ssd_minimal_listing(*ssd_inputs(1, 8, 4, 2, 2, 3)[0], 4)


def test_ssd_float64_agrees_to_machine_precision(ssd_path):
    args, kw = ssd_inputs(2, 70, 4, 8, 2, 5, dtype=torch.float64, init=True, D="head")
    torch.testing.assert_close(ssd_chunked(*args, 16, **kw), ssd_naive(*args, 16, **kw),
                               atol=1e-10, rtol=0)


def test_ssd_gradients_match_the_recurrence(ssd_path):
    args, kw = ssd_inputs(2, 19, 4, 3, 2, 4, dtype=torch.float64, init=True, D="head", seed=7)
    leaves = [t.clone().requires_grad_() for t in (*args, kw["initial_state"], kw["D"])]
    w_y = torch.randn(2, 19, 4, 3, dtype=torch.float64)
    w_s = torch.randn(2, 4, 3, 4, dtype=torch.float64)
    grads = []
    for fn in (ssd_chunked, ssd_naive):
        y, s = fn(*leaves[:5], 5, D=leaves[6], initial_state=leaves[5], return_final_state=True)
        grads.append(torch.autograd.grad((y * w_y).sum() + (s * w_s).sum(), leaves))
    for name, g1, g0 in zip(["x", "dt", "A", "B", "C", "initial_state", "D"], *grads):
        assert g1.abs().max() > 0, name
        torch.testing.assert_close(g1, g0, atol=1e-9, rtol=1e-9, msg=lambda m, n=name: f"{n}: {m}")


def test_ssd_input_errors_name_the_argument():
    (x, dt, A, B, C), _ = ssd_inputs(1, 8, 4, 2, 3, 2)
    with pytest.raises(ValueError, match="groups"):  # 3 groups do not divide 4 heads
        ssd_chunked(x, dt, A, B, C, 4)
    (x, dt, A, B, C), _ = ssd_inputs(1, 8, 4, 2, 1, 2)
    with pytest.raises(ValueError, match="'dt'"):
        ssd_chunked(x, dt[:, :4], A, B, C, 4)
    with pytest.raises(ValueError, match="'initial_state'"):
        ssd_chunked(x, dt, A, B, C, 4, initial_state=torch.zeros(1, 4, 2, 3))
    with pytest.raises(ValueError, match="chunk_size"):
        ssd_chunked(x, dt, A, B, C, 0)


# ---------------------------------------------------------------------------- Mamba-1 scan
def scan_inputs(layout, b=2, d=6, L=29, n=4, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)

    shape = {"static": (d, n), "shared": (b, n, L), "groups": (b, 3, n, L)}[layout]
    return dict(u=rnd(b, d, L), delta=rnd(b, d, L),
                A=-(torch.rand(d, n, generator=gen, dtype=torch.float64) * 3 + 0.1).to(dtype),
                B=rnd(*shape), C=rnd(*shape), D=rnd(d), z=rnd(b, d, L), delta_bias=rnd(d))


@pytest.mark.parametrize("layout", ["static", "shared", "groups"])
@pytest.mark.parametrize("chunk_size", [None, 1, 4, 7, 64])
def test_selective_scan_matches_reference(layout, chunk_size):
    kw = scan_inputs(layout, seed=len(layout))
    y_ref, s_ref = selective_scan_ref(**kw, delta_softplus=True, return_last_state=True)
    y, s = selective_scan(**kw, delta_softplus=True, return_last_state=True,
                          chunk_size=chunk_size)
    assert y.shape == kw["u"].shape and s.shape == (2, 6, 4)
    assert (y - y_ref).abs().max().item() <= 1e-4
    assert (s - s_ref).abs().max().item() <= 1e-4


def test_selective_scan_without_optional_terms():
    kw = scan_inputs("shared")
    kw["delta"] = F.softplus(kw["delta"])
    plain = {k: v for k, v in kw.items() if k not in ("D", "z", "delta_bias")}
    y = selective_scan(**plain)
    torch.testing.assert_close(y, selective_scan_ref(**plain), atol=1e-4, rtol=0)
    assert (y - selective_scan(**kw)).abs().max() > 1e-2  # the optional terms do matter


def test_selective_scan_gradients_match_reference():
    kw = scan_inputs("groups", L=17, dtype=torch.float64, seed=11)
    names = list(kw)
    leaves = [kw[k].clone().requires_grad_() for k in names]
    w = torch.randn(2, 6, 17, dtype=torch.float64)
    grads = []
    for fn, extra in ((selective_scan, {"chunk_size": 5}), (selective_scan_ref, {})):
        y = fn(**dict(zip(names, leaves)), delta_softplus=True, **extra)
        grads.append(torch.autograd.grad((y * w).sum(), leaves))
    for name, g1, g0 in zip(names, *grads):
        assert g1.abs().max() > 0, name
        torch.testing.assert_close(g1, g0, atol=1e-9, rtol=1e-9, msg=lambda m, n=name: f"{n}: {m}")


# ---------------------------------------------------------------------------- modules
def run_steps(module, u):
    state = module.allocate_state(u.shape[0])
    outs = []
    for t in range(u.shape[1]):
        y, state = module.step(u[:, t], state)
        outs.append(y)
    return torch.stack(outs, dim=1), state


def test_mamba2_step_over_a_sequence_equals_forward():
    torch.manual_seed(0)
    m = Mamba2(24, d_state=6, d_conv=3, expand=2, headdim=8, ngroups=2, chunk_size=8,
               backend="torch")
    with torch.no_grad():  # non-trivial biases and D so that every term is exercised
        m.conv1d.bias.normal_()
        m.D.normal_()
        m.norm.weight.normal_()
    u = torch.randn(2, 21, 24)
    y = m(u)
    y_steps, (conv_state, ssm_state) = run_steps(m, u)
    torch.testing.assert_close(y_steps, y, atol=1e-5, rtol=1e-5)
    assert ssm_state.shape == (2, m.nheads, 8, 6) and conv_state.shape == (2, m.conv_dim, 3)
    y3, _ = m.step(u[:, :1], m.allocate_state(2))  # (B, 1, D) in -> (B, 1, D) out
    torch.testing.assert_close(y3, y[:, :1], atol=1e-5, rtol=1e-5)


def test_mamba1_step_over_a_sequence_equals_forward():
    torch.manual_seed(1)
    m = Mamba1(20, d_state=5, d_conv=3, expand=2, backend="torch")
    with torch.no_grad():
        m.conv1d.bias.normal_()
        m.D.normal_()
    u = torch.randn(2, 23, 20)
    y_steps, (conv_state, ssm_state) = run_steps(m, u)
    torch.testing.assert_close(y_steps, m(u), atol=1e-5, rtol=1e-5)
    assert ssm_state.shape == (2, 40, 5) and conv_state.shape == (2, 40, 3)


def test_mamba2_is_causal():
    torch.manual_seed(2)
    m = Mamba2(16, d_state=4, d_conv=2, expand=2, headdim=8, chunk_size=4)
    u = torch.randn(1, 12, 16)
    u2 = u.clone()
    u2[:, 7:] += torch.randn(1, 5, 16)
    torch.testing.assert_close(m(u)[:, :7], m(u2)[:, :7])
    assert (m(u)[:, 7:] - m(u2)[:, 7:]).abs().max() > 1e-3


def test_mamba2_parameter_layout_matches_mamba_ssm():
    # mamba_ssm.modules.mamba2.Mamba2(d_model=64, d_state=16, d_conv=2, expand=8, headdim=64):
    # d_inner 512, 8 heads, in_proj [z, x, B, C, dt] = 512 + 512 + 16 + 16 + 8 = 1064.
    m = Mamba2(64, d_state=16, d_conv=2, expand=8, headdim=64)
    expected = {"in_proj.weight": (1064, 64), "conv1d.weight": (544, 1, 2),
                "conv1d.bias": (544,), "dt_bias": (8,), "A_log": (8,), "D": (8,),
                "norm.weight": (512,), "out_proj.weight": (64, 512)}
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == expected
    assert sum(p.numel() for p in m.parameters()) == 103_032
    g = Mamba2(32, d_state=8, expand=2, headdim=16, ngroups=2)  # 4 heads, 2 groups
    assert tuple(g.in_proj.weight.shape) == (2 * 64 + 2 * 2 * 8 + 4, 32)
    assert g.norm.group_size == 32


def test_mamba1_parameter_layout_matches_mamba_ssm():
    # mamba_ssm.modules.mamba_simple.Mamba(d_model=64, d_state=16, d_conv=4, expand=2):
    # d_inner 128, dt_rank ceil(64 / 16) = 4.
    m = Mamba1(64, d_state=16, d_conv=4, expand=2)
    expected = {"in_proj.weight": (256, 64), "conv1d.weight": (128, 1, 4), "conv1d.bias": (128,),
                "x_proj.weight": (36, 128), "dt_proj.weight": (128, 4), "dt_proj.bias": (128,),
                "A_log": (128, 16), "D": (128,), "out_proj.weight": (64, 128)}
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == expected


def test_initialisation_follows_mamba_ssm():
    torch.manual_seed(0)
    m = Mamba2(64, d_state=16, expand=8, headdim=16)  # 32 heads
    A = torch.exp(m.A_log)
    assert A.min() >= 1 and A.max() <= 16 and A.std() > 1
    dt = F.softplus(m.dt_bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001
    assert torch.all(m.D == 1) and torch.all(m.norm.weight == 1)
    m1 = Mamba1(32, d_state=4)
    torch.testing.assert_close(torch.exp(m1.A_log), torch.arange(1.0, 5.0).repeat(64, 1))
    dt1 = F.softplus(m1.dt_proj.bias)
    assert dt1.min() >= 1e-3 * 0.999 and dt1.max() <= 0.1 * 1.001


def test_gated_rmsnorm_hand_computation():
    torch.manual_seed(3)
    norm = GatedRMSNorm(8, eps=1e-5, group_size=4)
    with torch.no_grad():
        norm.weight.normal_()
    x, z = torch.randn(3, 8), torch.randn(3, 8)
    gated = x * z * torch.sigmoid(z)
    expected = torch.cat([gated[:, :4] / torch.sqrt(gated[:, :4].pow(2).mean(-1, True) + 1e-5),
                          gated[:, 4:] / torch.sqrt(gated[:, 4:].pow(2).mean(-1, True) + 1e-5)],
                         dim=1) * norm.weight
    torch.testing.assert_close(norm(x, z), expected)


def test_backend_option_and_cpu_fallback():
    with pytest.raises(ValueError, match="backend"):
        Mamba2(16, headdim=8, backend="triton")
    torch.manual_seed(4)
    auto = Mamba2(16, d_state=4, headdim=8, backend="auto")
    plain = Mamba2(16, d_state=4, headdim=8, backend="torch")
    plain.load_state_dict(auto.state_dict())
    u = torch.randn(2, 9, 16)
    torch.testing.assert_close(auto(u), plain(u))  # auto on a CPU tensor is the torch path
    with pytest.raises(ValueError, match="CUDA"):
        Mamba2(16, headdim=8, backend="cuda")(u)
    with pytest.raises(ValueError, match="CUDA"):
        Mamba1(16, backend="cuda")(u)


def test_ssm_module_reexports_each_concept_module():
    # eegm2.py, the benchmarks and user code import from layers.ssm: one definition per name
    import workbench.models.layers.selective_scan as scan_module

    assert ssm.Mamba2 is mamba.Mamba2 and ssm.Mamba1 is mamba.Mamba1
    assert ssm.GatedRMSNorm is mamba.GatedRMSNorm
    assert ssm.ssd_chunked is ssd.ssd_chunked and ssm.ssd_naive is ssd.ssd_naive
    assert ssm.selective_scan is scan_module.selective_scan
    assert ssm.mamba_ssm_available is mamba_backend.mamba_ssm_available
    assert all(hasattr(ssm, name) for name in ssm.__all__)
    assert not hasattr(ssm, "ssd_minimal_listing")  # a benchmark peer, not a library path


def test_headdim_must_divide_the_inner_width():
    with pytest.raises(ValueError, match="headdim"):
        Mamba2(10, expand=2, headdim=8)
    with pytest.raises(ValueError, match="ngroups"):
        Mamba2(16, expand=2, headdim=8, ngroups=3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_backend_on_cuda_matches_cpu():
    torch.manual_seed(5)
    m = Mamba2(32, d_state=8, d_conv=2, expand=2, headdim=16, chunk_size=16, backend="torch")
    u = torch.randn(2, 50, 32)
    y_cpu = m(u)
    y_gpu = m.cuda()(u.cuda()).cpu()
    torch.testing.assert_close(y_gpu, y_cpu, atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or not mamba_ssm_available(),
                    reason="needs CUDA and the mamba_ssm package")
@pytest.mark.parametrize("cls,kw", [
    (Mamba2, dict(d_state=16, d_conv=2, expand=8, headdim=64, chunk_size=64)),
    (Mamba1, dict(d_state=16, d_conv=2, expand=2)),
])
def test_cuda_backend_matches_torch_backend(cls, kw):
    torch.manual_seed(6)
    fused = cls(64, backend="cuda", **kw).cuda()
    plain = cls(64, backend="torch", **kw).cuda()
    plain.load_state_dict(fused.state_dict())
    u = torch.randn(2, 300, 64, device="cuda", requires_grad=True)
    y_f, y_p = fused(u), plain(u)
    scale = y_p.abs().max().item()
    assert (y_f - y_p).abs().max().item() <= 2e-3 * max(1.0, scale)
    g_f = torch.autograd.grad(y_f.square().sum(), u)[0]
    g_p = torch.autograd.grad(y_p.square().sum(), u)[0]
    assert (g_f - g_p).abs().max().item() <= 5e-3 * max(1.0, g_p.abs().max().item())
    assert math.isfinite(scale)
