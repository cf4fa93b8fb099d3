"""The Mamba2 block (Dao & Gu 2024), with mamba_ssm's parameter names and shapes so that state dicts interoperate.

    u (B, L, d_model) -> in_proj -> [z, xBC, dt]
    xBC -> causal depthwise conv1d -> silu -> [x, B, C]
    y = SSD scan of x (heads of headdim) with dt = softplus(dt + dt_bias), A = -exp(A_log), B, C, skip D
    out = out_proj(rmsnorm(y * silu(z)) * norm.weight)

Two paths compute it: mamba_ssm's fused Triton kernel (`mamba_split_conv1d_scan_combined`) when mamba-ssm is
importable and the input is on CUDA, else pure PyTorch (`fm4npp_models.model.ssd.ssd_chunked`), which runs anywhere.
"""

from __future__ import annotations

import functools
import logging
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from fm4npp_data.errors import KernelsUnavailable
from fm4npp_models.model.ssd import ssd_chunked

log = logging.getLogger("fm4npp_models.model.mamba2")

#: The pure path's chunk length on a CPU. The chunked scan is exact at any chunk length (the same function as the
#: kernels' 256), and on a CPU small chunks are much faster: an m1 training step is 3.1x faster at 64 than at 256.
CPU_CHUNK = 64

INSTALL_HINT = "the fused Mamba2 kernels need mamba-ssm and a CUDA device: pip install 'fm4npp[gpu]' on a CUDA machine"


@functools.cache
def _load_kernel():
    """mamba_ssm's fused in_proj-output -> out_proj-input function, or None when mamba-ssm cannot be imported."""
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_split_conv1d_scan_combined
    except ImportError:
        return None
    return mamba_split_conv1d_scan_combined


_logged_paths: set[str] = set()  # the paths already logged by this process


class RMSNormGated(nn.Module):
    """y = rmsnorm(x * silu(z)) * weight, the RMS taken over consecutive groups of `group_size` channels.

    mamba_ssm's gated RMSNorm with norm_before_gate=False (its parameter: `weight`, ones at init). Computed in at least
    float32, returned in the dtype of x. x, z: (..., d) -> (..., d).
    """

    def __init__(self, d: int, eps: float = 1e-5, group_size: int | None = None):
        super().__init__()
        self.eps = eps
        self.group_size = d if group_size is None else group_size
        if d % self.group_size:
            raise ValueError(f"group_size {self.group_size} does not divide the dimension {d}")
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(x.dtype, torch.float32)
        gated = x.to(dtype) * F.silu(z.to(dtype))
        groups = gated.unflatten(-1, (-1, self.group_size))  # (..., d / group_size, group_size)
        groups = groups * torch.rsqrt(groups.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (groups.flatten(-2) * self.weight.to(dtype)).to(x.dtype)


class Mamba2(nn.Module):
    """The Mamba2 block: (B, L, d_model) -> (B, L, d_model), causal along L.

    d_inner = expand * d_model channels in nheads = d_inner / headdim heads; B and C have ngroups groups of d_state,
    shared by nheads / ngroups heads each. Parameters (mamba_ssm's names and shapes):
        in_proj.weight   (2 d_inner + 2 ngroups d_state + nheads, d_model)   output order [z, x, B, C, dt]
        conv1d.weight    (conv_dim, 1, d_conv), conv1d.bias (conv_dim,)        conv_dim = d_inner + 2 ngroups d_state
        dt_bias, A_log, D  (nheads,)
        norm.weight      (d_inner,)
        out_proj.weight  (d_model, d_inner)

    use_kernels: "auto" (the fused kernels when mamba-ssm is importable and the input is on CUDA, else pure PyTorch),
    True (the kernels or KernelsUnavailable) or False (always pure PyTorch). `last_path` tells which ran last
    ("kernels" or "pure"); each path is logged once per process (logger "fm4npp_models.model.mamba2", INFO).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 64,
        ngroups: int = 1,
        chunk_size: int = 256,
        A_init_range: tuple[float, float] = (1, 16),
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        use_kernels: bool | str = "auto",
    ):
        super().__init__()
        if use_kernels not in ("auto", True, False):
            raise ValueError(f'use_kernels must be "auto", True or False, got {use_kernels!r}')
        if use_kernels is True and _load_kernel() is None:
            raise KernelsUnavailable(f"use_kernels=True, but mamba_ssm cannot be imported; {INSTALL_HINT}")
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = expand * d_model
        self.headdim = headdim
        self.ngroups = ngroups
        self.chunk_size = chunk_size
        self.use_kernels = use_kernels
        if self.d_inner % headdim:
            raise ValueError(f"headdim {headdim} does not divide d_inner = expand * d_model = {self.d_inner}")
        self.nheads = self.d_inner // headdim
        if self.nheads % ngroups:
            raise ValueError(f"ngroups {ngroups} does not divide the number of heads {self.nheads}")
        if not 0 < A_init_range[0] <= A_init_range[1]:
            raise ValueError(f"A_init_range must satisfy 0 < low <= high, got {A_init_range}")
        self.last_path: str | None = None

        conv_dim = self.d_inner + 2 * ngroups * d_state
        self.in_proj = nn.Linear(d_model, self.d_inner + conv_dim + self.nheads, bias=False)  # [z, x, B, C, dt]
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, d_conv, groups=conv_dim, padding=d_conv - 1, bias=True)

        # dt = softplus(dt_proj + dt_bias) starts log-uniform in [dt_min, dt_max] (floored at dt_init_floor):
        # dt_bias is the inverse softplus of such a draw, log(exp(dt) - 1) = dt + log(1 - exp(-dt)).
        dt = torch.exp(torch.rand(self.nheads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        # A = -exp(A_log) starts uniform in -A_init_range; D, the skip, at 1.
        self.A_log = nn.Parameter(torch.log(torch.empty(self.nheads).uniform_(*A_init_range)))
        self.D = nn.Parameter(torch.ones(self.nheads))
        for parameter in (self.dt_bias, self.A_log, self.D):
            parameter._no_weight_decay = True  # as in mamba_ssm, for optimizers that look for it

        self.norm = RMSNormGated(self.d_inner, eps=1e-5, group_size=self.d_inner // ngroups)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, u: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """u: (B, L, d_model); mask: (B, L) bool, True on real tokens, padding on the right -> (B, L, d_model).

        The block is causal, so padding after the real tokens cannot change their outputs; the padded inputs are
        also zeroed, so that even infinite or NaN padding cannot turn into NaN through a product with 0.
        """
        if mask is not None:
            if mask.shape != u.shape[:2]:
                raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {tuple(u.shape[:2])}")
            u = u.masked_fill(~mask.to(torch.bool)[..., None], 0.0)
        zxbcdt = self.in_proj(u)  # (B, L, 2 d_inner + 2 ngroups d_state + nheads)
        if self._kernels_for(u):
            self._record_path("kernels")
            return _load_kernel()(
                zxbcdt,
                self.conv1d.weight.squeeze(1),  # (conv_dim, d_conv)
                self.conv1d.bias,
                self.dt_bias,
                -torch.exp(self.A_log.float()),
                D=self.D,
                chunk_size=self.chunk_size,
                seq_idx=None,
                activation="silu",
                rmsnorm_weight=self.norm.weight,
                rmsnorm_eps=self.norm.eps,
                outproj_weight=self.out_proj.weight,
                outproj_bias=None,
                headdim=self.headdim,
                ngroups=self.ngroups,
                norm_before_gate=False,
            )
        self._record_path("pure")
        return self._forward_pure(zxbcdt)

    def _forward_pure(self, zxbcdt: torch.Tensor) -> torch.Tensor:
        """The block after in_proj, in PyTorch: (B, L, d_in_proj) -> (B, L, d_model)."""
        batch, length, _ = zxbcdt.shape
        gn = self.ngroups * self.d_state
        z, xBC, dt = torch.split(zxbcdt, [self.d_inner, self.d_inner + 2 * gn, self.nheads], dim=-1)
        xBC = self.conv1d(xBC.transpose(1, 2))[..., :length].transpose(1, 2)  # causal: the last d_conv inputs
        x, B, C = torch.split(F.silu(xBC), [self.d_inner, gn, gn], dim=-1)
        y, _ = ssd_chunked(
            x.unflatten(-1, (self.nheads, self.headdim)),
            F.softplus(dt + self.dt_bias),
            -torch.exp(self.A_log),
            B.unflatten(-1, (self.ngroups, self.d_state)),
            C.unflatten(-1, (self.ngroups, self.d_state)),
            chunk_size=min(self.chunk_size, CPU_CHUNK) if zxbcdt.device.type == "cpu" else self.chunk_size,
            D=self.D,
        )
        return self.out_proj(self.norm(y.flatten(-2), z))

    def _kernels_for(self, u: torch.Tensor) -> bool:
        """Whether this call runs the fused kernels; raises KernelsUnavailable when use_kernels=True and it cannot."""
        if self.use_kernels is False:
            return False
        if _load_kernel() is None:
            if self.use_kernels is True:
                raise KernelsUnavailable(f"use_kernels=True, but mamba_ssm cannot be imported; {INSTALL_HINT}")
            return False
        if not u.is_cuda:
            if self.use_kernels is True:
                raise KernelsUnavailable(f"use_kernels=True, but the input is on {u.device}; {INSTALL_HINT}")
            return False
        return True

    def _record_path(self, path: str) -> None:
        self.last_path = path
        if path not in _logged_paths:
            _logged_paths.add(path)
            if path == "kernels":
                log.info("Mamba2: fused mamba_ssm kernels (mamba_split_conv1d_scan_combined)")
            else:
                log.info("Mamba2: pure PyTorch path (chunked SSD scan); the fused kernels need mamba-ssm and CUDA")
