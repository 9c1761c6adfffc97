"""Mamba-2 and Mamba-1 mixers (and Mamba-2's gated RMSNorm) in pure PyTorch.

The parameter names and shapes are those of ``mamba_ssm.modules.mamba2.Mamba2`` and
``mamba_ssm.modules.mamba_simple.Mamba``, so state dicts move between the two; on a CUDA machine
where ``mamba_ssm`` imports, ``backend="auto"`` (or ``"cuda"``) runs its fused kernels on the
same parameters (:mod:`workbench.models.layers.mamba_backend`).

==================  ====================================================================
fast                reference
==================  ====================================================================
``Mamba2.forward``  ``Mamba2.step`` applied token by token
``Mamba1.forward``  ``Mamba1.step`` applied token by token
==================  ====================================================================

References
----------
.. [1] T. Dao and A. Gu, "Transformers are SSMs: Generalized models and efficient algorithms
   through structured state space duality", ICML 2024, arXiv:2405.21060.
.. [2] A. Gu and T. Dao, "Mamba: Linear-time sequence modeling with selective state spaces",
   arXiv:2312.00752, 2023.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from workbench.models.layers.mamba_backend import BACKENDS, _kernel, _use_kernel
from workbench.models.layers.selective_scan import selective_scan
from workbench.models.layers.ssd import _compute_dtype, ssd_chunked
from workbench.utils import check_option, check_positive

__all__ = ["GatedRMSNorm", "Mamba1", "Mamba2"]


def _inverse_softplus_dt(n: int, dt_min: float, dt_max: float, floor: float) -> Tensor:
    # dt log-uniform in [dt_min, dt_max], floored; the bias is softplus^-1(dt).
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))


class GatedRMSNorm(nn.Module):
    """RMSNorm with a SiLU gate, as ``mamba_ssm.ops.triton.layernorm_gated.RMSNorm``.

    ``norm_before_gate=False`` (Mamba-2's choice): ``rmsnorm(x * silu(z)) * weight``, the
    RMS taken over groups of ``group_size`` features.

    References
    ----------
    .. [1] T. Dao and A. Gu, "Transformers are SSMs", ICML 2024, arXiv:2405.21060.
    """

    def __init__(self, d: int, eps: float = 1e-5, group_size: int | None = None,
                 norm_before_gate: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.group_size = group_size or d
        if d % self.group_size:
            raise ValueError(f"Invalid value for the 'group_size' parameter: {group_size} must "
                             f"divide the width {d}.")
        self.norm_before_gate = norm_before_gate
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: Tensor, z: Tensor | None = None) -> Tensor:
        dtype = x.dtype
        cdt = _compute_dtype(dtype)
        x = x.to(cdt)
        if z is not None and not self.norm_before_gate:
            x = x * F.silu(z.to(cdt))
        xg = x.view(*x.shape[:-1], -1, self.group_size)  # (..., groups, group_size)
        xg = xg * torch.rsqrt(xg.pow(2).mean(-1, keepdim=True) + self.eps)
        out = xg.view(x.shape) * self.weight.to(cdt)
        if z is not None and self.norm_before_gate:
            out = out * F.silu(z.to(cdt))
        return out.to(dtype)


class Mamba2(nn.Module):
    """Mamba-2 mixer (SSD) with the parameter layout of ``mamba_ssm.modules.mamba2.Mamba2``.

    ``in_proj`` -> split into ``z, xBC, dt`` -> causal depthwise ``conv1d`` + SiLU on ``xBC``
    -> SSD scan over heads -> gated RMSNorm with ``z`` -> ``out_proj``.

    Parameters
    ----------
    d_model : int
        Input/output width.
    d_state : int
        State size ``N`` per head.
    d_conv : int
        Width of the causal depthwise convolution.
    expand : int
        ``d_inner = expand * d_model``.
    headdim : int
        Head size ``P``; ``d_inner / headdim`` heads.
    ngroups : int
        Groups of heads sharing ``B`` and ``C``.
    chunk_size : int
        SSD chunk length.
    backend : {"auto", "torch", "cuda"}
        ``"auto"`` uses ``mamba_ssm``'s fused kernel when it imports and the input is on CUDA,
        the pure-PyTorch scan otherwise; ``"cuda"`` requires the kernel; ``"torch"`` never uses
        it.
    A_init_range, dt_min, dt_max, dt_init_floor, bias, conv_bias
        Initialisation and bias options, as in ``mamba_ssm``.

    References
    ----------
    .. [1] T. Dao and A. Gu, "Transformers are SSMs", ICML 2024, arXiv:2405.21060.
    """

    def __init__(self, d_model: int, d_state: int = 128, d_conv: int = 4, expand: int = 2,
                 headdim: int = 64, ngroups: int = 1, chunk_size: int = 256,
                 backend: str = "auto", A_init_range: tuple[float, float] = (1.0, 16.0),
                 dt_min: float = 0.001, dt_max: float = 0.1, dt_init_floor: float = 1e-4,
                 bias: bool = False, conv_bias: bool = True) -> None:
        super().__init__()
        self.backend = check_option("backend", backend, BACKENDS)
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.expand, self.headdim, self.ngroups = expand, headdim, ngroups
        self.chunk_size = int(check_positive("chunk_size", chunk_size))
        self.d_inner = expand * d_model
        if self.d_inner % headdim:
            raise ValueError(f"Invalid value for the 'headdim' parameter: {headdim} must divide "
                             f"d_inner = expand * d_model = {self.d_inner}.")
        self.nheads = self.d_inner // headdim
        if self.nheads % ngroups:
            raise ValueError(f"Invalid value for the 'ngroups' parameter: {ngroups} must divide "
                             f"the {self.nheads} heads.")
        lo, hi = A_init_range
        if not 0 < lo <= hi:
            raise ValueError(f"Invalid value for the 'A_init_range' parameter: expected "
                             f"0 < low <= high, got {A_init_range!r}.")
        self.conv_dim = self.d_inner + 2 * ngroups * d_state
        # in_proj output order: [z, x, B, C, dt]
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner + 2 * ngroups * d_state + self.nheads,
                                 bias=bias)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, kernel_size=d_conv,
                                groups=self.conv_dim, padding=d_conv - 1, bias=conv_bias)
        self.act = nn.SiLU()
        self.dt_bias = nn.Parameter(_inverse_softplus_dt(self.nheads, dt_min, dt_max,
                                                         dt_init_floor))
        self.A_log = nn.Parameter(torch.log(torch.empty(self.nheads).uniform_(lo, hi)))
        self.D = nn.Parameter(torch.ones(self.nheads))
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True
        self.norm = GatedRMSNorm(self.d_inner, eps=1e-5, group_size=self.d_inner // ngroups,
                                 norm_before_gate=False)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def extra_repr(self) -> str:
        return (f"d_state={self.d_state}, d_conv={self.d_conv}, headdim={self.headdim}, "
                f"nheads={self.nheads}, ngroups={self.ngroups}, chunk_size={self.chunk_size}, "
                f"backend={self.backend!r}")

    def _split(self, zxbcdt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return torch.split(zxbcdt, [self.d_inner, self.conv_dim, self.nheads], dim=-1)

    def forward(self, u: Tensor) -> Tensor:
        """``u`` (batch, length, d_model) -> (batch, length, d_model)."""
        if u.dim() != 3 or u.shape[-1] != self.d_model:
            raise ValueError(f"Invalid shape for the Mamba2 input: expected (batch, length, "
                             f"{self.d_model}), got {tuple(u.shape)}.")
        b, L, _ = u.shape
        zxbcdt = self.in_proj(u)  # (b, L, 2 d_inner + 2 g n + h)
        A = -torch.exp(self.A_log.float())  # (h,)
        if _use_kernel(self.backend, "mamba2", u, self.d_conv):
            return _kernel("mamba2")(
                zxbcdt, self.conv1d.weight.squeeze(1), self.conv1d.bias, self.dt_bias, A,
                D=self.D, chunk_size=self.chunk_size, activation="silu",
                rmsnorm_weight=self.norm.weight, rmsnorm_eps=self.norm.eps,
                outproj_weight=self.out_proj.weight, outproj_bias=self.out_proj.bias,
                headdim=self.headdim, ngroups=self.ngroups, norm_before_gate=False)
        z, xBC, dt = self._split(zxbcdt)
        xBC = self.act(self.conv1d(xBC.transpose(1, 2))[..., :L]).transpose(1, 2)  # causal
        x, B, C = torch.split(xBC, [self.d_inner, self.ngroups * self.d_state,
                                    self.ngroups * self.d_state], dim=-1)
        dt = F.softplus(dt + self.dt_bias)  # (b, L, h)
        y = ssd_chunked(x.reshape(b, L, self.nheads, self.headdim), dt, A,
                        B.reshape(b, L, self.ngroups, self.d_state),
                        C.reshape(b, L, self.ngroups, self.d_state),
                        self.chunk_size, D=self.D)  # (b, L, h, p)
        y = self.norm(y.reshape(b, L, self.d_inner), z)
        return self.out_proj(y)

    def allocate_state(self, batch: int, device: torch.device | str | None = None,
                       dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
        """Zero streaming state: ``(conv_state (batch, conv_dim, d_conv), ssm_state (batch,
        nheads, headdim, d_state))``."""
        device = device if device is not None else self.out_proj.weight.device
        dtype = dtype or self.out_proj.weight.dtype
        return (torch.zeros(batch, self.conv_dim, self.d_conv, device=device, dtype=dtype),
                torch.zeros(batch, self.nheads, self.headdim, self.d_state, device=device,
                            dtype=_compute_dtype(dtype)))

    def step(self, u_t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One streaming step: ``u_t`` (batch, d_model) or (batch, 1, d_model).

        Returns the output with the shape of ``u_t`` and the new state (the old one is not
        modified). Applied over a sequence from :meth:`allocate_state` it equals
        :meth:`forward`.
        """
        squeeze = u_t.dim() == 3
        if squeeze:
            u_t = u_t[:, 0]
        conv_state, ssm_state = state
        b = u_t.shape[0]
        z, xBC, dt = self._split(self.in_proj(u_t))  # (b, d_inner), (b, conv_dim), (b, h)
        conv_state = torch.cat([conv_state[:, :, 1:], xBC[:, :, None].to(conv_state.dtype)], -1)
        xBC = (conv_state * self.conv1d.weight[:, 0]).sum(-1)  # (b, conv_dim)
        if self.conv1d.bias is not None:
            xBC = xBC + self.conv1d.bias
        xBC = self.act(xBC)
        x, B, C = torch.split(xBC, [self.d_inner, self.ngroups * self.d_state,
                                    self.ngroups * self.d_state], dim=-1)
        r = self.nheads // self.ngroups
        cdt = ssm_state.dtype
        dt = F.softplus(dt + self.dt_bias).to(cdt)  # (b, h)
        A = -torch.exp(self.A_log.to(cdt))
        x = x.reshape(b, self.nheads, self.headdim).to(cdt)  # (b, h, p)
        B = B.reshape(b, self.ngroups, self.d_state).repeat_interleave(r, 1).to(cdt)  # (b, h, n)
        C = C.reshape(b, self.ngroups, self.d_state).repeat_interleave(r, 1).to(cdt)  # (b, h, n)
        ssm_state = (ssm_state * torch.exp(dt * A)[..., None, None]
                     + (dt[..., None] * x)[..., None] * B[:, :, None, :])  # (b, h, p, n)
        y = (ssm_state @ C[..., None]).squeeze(-1) + self.D.to(cdt)[:, None] * x  # (b, h, p)
        y = self.norm(y.reshape(b, self.d_inner).to(u_t.dtype), z)
        out = self.out_proj(y)
        return (out[:, None] if squeeze else out), (conv_state, ssm_state)


class Mamba1(nn.Module):
    """Mamba-1 mixer with the parameter layout of ``mamba_ssm.modules.mamba_simple.Mamba``.

    ``in_proj`` -> ``x, z`` -> causal depthwise ``conv1d`` + SiLU on ``x`` -> ``x_proj`` gives
    ``dt`` (low rank), ``B``, ``C`` -> ``dt_proj`` -> selective scan gated by ``silu(z)`` ->
    ``out_proj``.

    Parameters
    ----------
    d_model : int
        Input/output width.
    d_state : int
        State size per channel.
    d_conv : int
        Width of the causal depthwise convolution.
    expand : int
        ``d_inner = expand * d_model``.
    dt_rank : int or "auto"
        Rank of the ``dt`` projection; ``ceil(d_model / 16)`` for ``"auto"``.
    backend : {"auto", "torch", "cuda"}
        As for :class:`Mamba2` (``mamba_ssm``'s ``selective_scan_fn``).
    dt_min, dt_max, dt_init_floor, dt_scale, conv_bias, bias
        Initialisation and bias options, as in ``mamba_ssm``.

    References
    ----------
    .. [1] A. Gu and T. Dao, "Mamba: Linear-time sequence modeling with selective state spaces",
       arXiv:2312.00752, 2023.
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | str = "auto", backend: str = "auto", dt_min: float = 0.001,
                 dt_max: float = 0.1, dt_init_floor: float = 1e-4, dt_scale: float = 1.0,
                 conv_bias: bool = True, bias: bool = False) -> None:
        super().__init__()
        self.backend = check_option("backend", backend, BACKENDS)
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, kernel_size=d_conv,
                                groups=self.d_inner, padding=d_conv - 1, bias=conv_bias)
        self.act = nn.SiLU()
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        std = self.dt_rank ** -0.5 * dt_scale
        with torch.no_grad():
            nn.init.uniform_(self.dt_proj.weight, -std, std)
            self.dt_proj.bias.copy_(_inverse_softplus_dt(self.d_inner, dt_min, dt_max,
                                                         dt_init_floor))
        # S4D-real initialisation: A[d, k] = -(k + 1)
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))  # (d_inner, d_state)
        self.D = nn.Parameter(torch.ones(self.d_inner))
        for p in (self.A_log, self.D):
            p._no_weight_decay = True
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def extra_repr(self) -> str:
        return (f"d_state={self.d_state}, d_conv={self.d_conv}, dt_rank={self.dt_rank}, "
                f"backend={self.backend!r}")

    def forward(self, u: Tensor) -> Tensor:
        """``u`` (batch, length, d_model) -> (batch, length, d_model)."""
        if u.dim() != 3 or u.shape[-1] != self.d_model:
            raise ValueError(f"Invalid shape for the Mamba1 input: expected (batch, length, "
                             f"{self.d_model}), got {tuple(u.shape)}.")
        L = u.shape[1]
        x, z = self.in_proj(u).chunk(2, dim=-1)  # (b, L, d_inner) each
        x = self.act(self.conv1d(x.transpose(1, 2))[..., :L])  # (b, d_inner, L), causal
        dt, B, C = torch.split(self.x_proj(x.transpose(1, 2)),
                               [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (dt @ self.dt_proj.weight.t()).transpose(1, 2)  # (b, d_inner, L); bias in the scan
        B = B.transpose(1, 2).contiguous()  # (b, n, L)
        C = C.transpose(1, 2).contiguous()  # (b, n, L)
        A = -torch.exp(self.A_log.float())  # (d_inner, n)
        scan = _kernel("mamba1") if _use_kernel(self.backend, "mamba1", u) else selective_scan
        y = scan(x.contiguous(), dt.contiguous(), A, B, C, self.D.float(),
                 z=z.transpose(1, 2).contiguous(), delta_bias=self.dt_proj.bias.float(),
                 delta_softplus=True)  # (b, d_inner, L)
        return self.out_proj(y.transpose(1, 2))

    def allocate_state(self, batch: int, device: torch.device | str | None = None,
                       dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
        """Zero streaming state: ``(conv_state (batch, d_inner, d_conv), ssm_state (batch,
        d_inner, d_state))``."""
        device = device if device is not None else self.out_proj.weight.device
        dtype = dtype or self.out_proj.weight.dtype
        return (torch.zeros(batch, self.d_inner, self.d_conv, device=device, dtype=dtype),
                torch.zeros(batch, self.d_inner, self.d_state, device=device,
                            dtype=_compute_dtype(dtype)))

    def step(self, u_t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One streaming step; see :meth:`Mamba2.step`."""
        squeeze = u_t.dim() == 3
        if squeeze:
            u_t = u_t[:, 0]
        conv_state, ssm_state = state
        x, z = self.in_proj(u_t).chunk(2, dim=-1)  # (b, d_inner) each
        conv_state = torch.cat([conv_state[:, :, 1:], x[:, :, None].to(conv_state.dtype)], -1)
        x = (conv_state * self.conv1d.weight[:, 0]).sum(-1)
        if self.conv1d.bias is not None:
            x = x + self.conv1d.bias
        x = self.act(x)  # (b, d_inner)
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], -1)
        cdt = ssm_state.dtype
        dt = F.softplus(self.dt_proj(dt)).to(cdt)  # (b, d_inner)
        A = -torch.exp(self.A_log.to(cdt))  # (d_inner, n)
        ssm_state = (ssm_state * torch.exp(dt[..., None] * A)
                     + (dt * x.to(cdt))[..., None] * B.to(cdt)[:, None, :])  # (b, d_inner, n)
        y = (ssm_state * C.to(cdt)[:, None, :]).sum(-1) + self.D.to(cdt) * x.to(cdt)
        y = (y * F.silu(z.to(cdt))).to(u_t.dtype)
        out = self.out_proj(y)
        return (out[:, None] if squeeze else out), (conv_state, ssm_state)
