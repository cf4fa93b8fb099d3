"""The Mamba2 block: mamba_ssm's parameter layout, its function against a step-by-step reference, padding, init,
the kernel switch and gradients."""

import logging
import math

import pytest
import torch
import torch.nn.functional as F

from fm4npp_models.model import mamba2
from fm4npp_models.model.mamba2 import KernelsUnavailable, Mamba2


def mamba2_sequential_reference(block: Mamba2, u: torch.Tensor) -> torch.Tensor:
    """The block's function computed one time step after the other in float64, independently of fm4npp_models.model.ssd:
    in_proj, the conv as an explicit sum over the last d_conv inputs, silu, the SSD recurrence per head, the gated
    RMSNorm per group, out_proj. u: (B, L, d_model) -> (B, L, d_model)."""
    p = {name: t.detach().double() for name, t in block.named_parameters()}
    u = u.double()
    batch, length, _ = u.shape
    d_inner, gn, h, hd, g, n = (
        block.d_inner,
        block.ngroups * block.d_state,
        block.nheads,
        block.headdim,
        block.ngroups,
        block.d_state,
    )
    conv_weight = p["conv1d.weight"][:, 0]  # (conv_dim, d_conv); tap d_conv - 1 multiplies the current input
    group_of_head = torch.arange(h) // (h // g)
    A = -torch.exp(p["A_log"])
    window = torch.zeros(batch, block.d_conv, d_inner + 2 * gn, dtype=torch.float64)  # the last d_conv conv inputs
    state = torch.zeros(batch, h, hd, n, dtype=torch.float64)
    outputs = []
    for t in range(length):
        projected = u[:, t] @ p["in_proj.weight"].T
        z, xBC, dt = projected.split([d_inner, d_inner + 2 * gn, h], dim=-1)
        window = torch.cat([window[:, 1:], xBC[:, None]], dim=1)
        conv = sum(window[:, k] * conv_weight[:, k] for k in range(block.d_conv)) + p["conv1d.bias"]
        x, B, C = F.silu(conv).split([d_inner, gn, gn], dim=-1)
        x = x.view(batch, h, hd)
        B = B.view(batch, g, n)[:, group_of_head]  # (batch, h, n)
        C = C.view(batch, g, n)[:, group_of_head]
        dt = F.softplus(dt + p["dt_bias"])  # (batch, h)
        state = torch.exp(dt * A)[..., None, None] * state + dt[..., None, None] * x[..., :, None] * B[..., None, :]
        y = (state * C[..., None, :]).sum(-1) + p["D"][:, None] * x  # (batch, h, hd)
        gated = (y.reshape(batch, d_inner) * F.silu(z)).view(batch, g, d_inner // g)
        normed = gated / torch.sqrt(gated.square().mean(-1, keepdim=True) + block.norm.eps)
        outputs.append((normed.view(batch, d_inner) * p["norm.weight"]) @ p["out_proj.weight"].T)
    return torch.stack(outputs, dim=1)


def randomize(block: Mamba2, seed: int = 0) -> Mamba2:
    """Move D and the norm weight off their constant init, so that the comparison sees them."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        block.D.copy_(torch.randn(block.D.shape, generator=gen))
        block.norm.weight.copy_(1.0 + 0.5 * torch.randn(block.norm.weight.shape, generator=gen))
    return block


def test_parameters_follow_the_mamba_ssm_layout():
    block = Mamba2(d_model=16, d_state=8, d_conv=4, expand=2, headdim=8, ngroups=2)
    # d_inner 32, nheads 4, conv_dim 32 + 2 * 2 * 8 = 64, in_proj 2 * 32 + 2 * 2 * 8 + 4 = 100
    expected = {
        "dt_bias": (4,),
        "A_log": (4,),
        "D": (4,),
        "in_proj.weight": (100, 16),
        "conv1d.weight": (64, 1, 4),
        "conv1d.bias": (64,),
        "norm.weight": (32,),
        "out_proj.weight": (16, 32),
    }
    assert {name: tuple(t.shape) for name, t in block.state_dict().items()} == expected
    assert block.conv1d.padding == (3,)
    assert block.conv1d.groups == 64


@pytest.mark.parametrize("ngroups", [1, 2])
def test_block_equals_sequential_reference(ngroups):
    torch.manual_seed(ngroups)
    block = randomize(Mamba2(d_model=12, d_state=6, headdim=6, ngroups=ngroups, chunk_size=16, use_kernels=False))
    block = block.double()
    u = torch.randn(2, 37, 12, dtype=torch.float64)  # 37: not a multiple of the chunk
    out = block(u)
    assert out.shape == (2, 37, 12)
    assert block.last_path == "pure"
    expected = mamba2_sequential_reference(block, u)
    assert ((out - expected).norm() / expected.norm()).item() < 1e-10


@pytest.mark.parametrize("fill", [1e30, float("inf"), float("nan")])
def test_padding_does_not_change_real_tokens(fill):
    torch.manual_seed(0)
    block = randomize(Mamba2(d_model=16, d_state=8, headdim=8, ngroups=2, chunk_size=8, use_kernels=False))
    lengths = [13, 7]
    sequences = [torch.randn(1, n, 16) for n in lengths]
    alone = [block(s)[0] for s in sequences]
    padded = torch.full((2, 21, 16), fill)
    mask = torch.zeros(2, 21, dtype=torch.bool)
    for i, (s, n) in enumerate(zip(sequences, lengths, strict=True)):
        padded[i, :n] = s[0]
        mask[i, :n] = True
    out = block(padded, mask=mask)
    for i, n in enumerate(lengths):
        torch.testing.assert_close(out[i, :n], alone[i])


def test_finite_padding_without_mask_does_not_change_real_tokens():
    """The block is causal: whatever comes after the real tokens cannot change them, mask or not."""
    torch.manual_seed(1)
    block = Mamba2(d_model=16, d_state=8, headdim=8, chunk_size=8, use_kernels=False)
    u = torch.randn(2, 11, 16)
    padded = torch.cat([u, 100.0 * torch.randn(2, 6, 16)], dim=1)
    torch.testing.assert_close(block(padded)[:, :11], block(u))


def test_mask_shape_is_checked():
    block = Mamba2(d_model=16, d_state=8, headdim=8, use_kernels=False)
    with pytest.raises(ValueError, match="mask has shape"):
        block(torch.randn(2, 5, 16), mask=torch.ones(2, 4, dtype=torch.bool))


def test_initialization():
    torch.manual_seed(0)
    dt_min, dt_max = 0.001, 0.1
    block = Mamba2(d_model=256, d_state=4, headdim=2, A_init_range=(1, 16), dt_min=dt_min, dt_max=dt_max)
    assert block.nheads == 256
    dt = F.softplus(block.dt_bias.detach().double())
    assert (dt >= dt_min * (1 - 1e-5)).all()
    assert (dt <= dt_max * (1 + 1e-5)).all()
    # log dt is uniform on [log dt_min, log dt_max]: mean at the middle (sd of the mean 1.33 / 16 = 0.083)
    assert dt.log().mean().item() == pytest.approx((math.log(dt_min) + math.log(dt_max)) / 2, abs=0.4)
    A = torch.exp(block.A_log.detach())
    assert (A >= 1.0).all()
    assert (A <= 16.0).all()
    assert A.mean().item() == pytest.approx(8.5, abs=1.5)  # uniform on [1, 16]: sd of the mean 4.3 / 16 = 0.27
    assert torch.equal(block.D.detach(), torch.ones(256))
    assert torch.equal(block.norm.weight.detach(), torch.ones(512))
    assert block.norm.eps == 1e-5
    assert all(getattr(block, name)._no_weight_decay for name in ("dt_bias", "A_log", "D"))


def test_dt_floor():
    """Draws below dt_init_floor are raised to it (here dt_min < floor, so about 2/3 of them)."""
    torch.manual_seed(0)
    block = Mamba2(d_model=256, d_state=4, headdim=2, dt_min=1e-5, dt_max=1e-2, dt_init_floor=1e-3)
    dt = F.softplus(block.dt_bias.detach().double())
    assert (dt >= 1e-3 * (1 - 1e-5)).all()
    assert (dt <= 1e-2 * (1 + 1e-5)).all()
    at_floor = (dt - 1e-3).abs() < 1e-8
    assert 0.5 < at_floor.double().mean().item() < 0.8


def test_use_kernels_true_without_mamba_ssm(monkeypatch):
    monkeypatch.setattr(mamba2, "_load_kernel", lambda: None)
    with pytest.raises(KernelsUnavailable, match=r"mamba_ssm cannot be imported.*pip install 'fm4npp\[gpu\]'"):
        Mamba2(d_model=16, d_state=8, headdim=8, use_kernels=True)
    assert issubclass(KernelsUnavailable, RuntimeError)
    block = Mamba2(d_model=16, d_state=8, headdim=8)  # "auto" falls back to PyTorch
    block(torch.randn(1, 3, 16))
    assert block.last_path == "pure"


def test_use_kernels_true_needs_cuda(monkeypatch):
    """With mamba-ssm importable but the input on the CPU, use_kernels=True refuses and "auto" takes PyTorch."""

    def fake_kernel(*_args, **_kwargs):
        raise AssertionError("the kernels must not run on a CPU input")

    monkeypatch.setattr(mamba2, "_load_kernel", lambda: fake_kernel)
    block = Mamba2(d_model=16, d_state=8, headdim=8, use_kernels=True)
    with pytest.raises(KernelsUnavailable, match=r"the input is on cpu.*CUDA.*pip install 'fm4npp\[gpu\]'"):
        block(torch.randn(1, 3, 16))
    auto = Mamba2(d_model=16, d_state=8, headdim=8)
    auto(torch.randn(1, 3, 16))
    assert auto.last_path == "pure"


def test_kernel_call_arguments(monkeypatch):
    """The fused kernel gets the stock mamba_ssm arguments (checked with a stand-in, as CI has no GPU)."""
    calls = []

    def fake_kernel(zxbcdt, conv1d_weight, conv1d_bias, dt_bias, A, **kwargs):
        calls.append((zxbcdt, conv1d_weight, conv1d_bias, dt_bias, A, kwargs))
        return torch.zeros(*zxbcdt.shape[:2], kwargs["outproj_weight"].shape[0])

    monkeypatch.setattr(mamba2, "_load_kernel", lambda: fake_kernel)
    block = Mamba2(d_model=16, d_state=8, headdim=8, ngroups=2, chunk_size=64)
    monkeypatch.setattr(block, "_kernels_for", lambda _u: True)
    out = block(torch.randn(2, 5, 16))
    assert out.shape == (2, 5, 16)
    assert block.last_path == "kernels"
    zxbcdt, conv_weight, conv_bias, dt_bias, A, kwargs = calls[0]
    assert zxbcdt.shape == (2, 5, 100)
    assert conv_weight.shape == (64, 4)
    assert torch.equal(conv_weight, block.conv1d.weight[:, 0])
    assert conv_bias is block.conv1d.bias
    assert dt_bias is block.dt_bias
    torch.testing.assert_close(A, -torch.exp(block.A_log))
    assert kwargs["D"] is block.D
    assert kwargs["rmsnorm_weight"] is block.norm.weight
    assert kwargs["outproj_weight"] is block.out_proj.weight
    expected = {"chunk_size": 64, "seq_idx": None, "activation": "silu", "rmsnorm_eps": 1e-5, "outproj_bias": None}
    expected |= {"headdim": 8, "ngroups": 2, "norm_before_gate": False}
    assert {k: kwargs[k] for k in expected} == expected


def test_path_logged_once(monkeypatch, caplog):
    monkeypatch.setattr(mamba2, "_logged_paths", set())
    block = Mamba2(d_model=16, d_state=8, headdim=8, use_kernels=False)
    with caplog.at_level(logging.INFO, logger="fm4npp_models.model.mamba2"):
        block(torch.randn(1, 3, 16))
        block(torch.randn(1, 4, 16))
        Mamba2(d_model=16, d_state=8, headdim=8, use_kernels=False)(torch.randn(1, 2, 16))
    messages = [r.getMessage() for r in caplog.records if r.name == "fm4npp_models.model.mamba2"]
    assert len(messages) == 1
    assert "pure PyTorch" in messages[0]


def test_gradients_flow():
    torch.manual_seed(0)
    block = Mamba2(d_model=16, d_state=8, headdim=8, ngroups=2, chunk_size=8, use_kernels=False)
    u = torch.randn(2, 19, 16, requires_grad=True)
    mask = torch.ones(2, 19, dtype=torch.bool)
    mask[1, 12:] = False
    block(u, mask=mask).square().mean().backward()
    for name, parameter in block.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name
    assert torch.isfinite(u.grad).all()
    assert torch.equal(u.grad[1, 12:], torch.zeros(7, 16))  # padding does not take part


def test_invalid_configurations():
    with pytest.raises(ValueError, match="headdim"):
        Mamba2(d_model=16, headdim=12)
    with pytest.raises(ValueError, match="ngroups"):
        Mamba2(d_model=16, headdim=8, ngroups=3)
    with pytest.raises(ValueError, match="use_kernels"):
        Mamba2(d_model=16, headdim=8, use_kernels="yes")


def test_the_cpu_chunk_computes_the_same_function(monkeypatch):
    """On a CPU the pure path scans in chunks of CPU_CHUNK (64) whatever the block's chunk_size (256, the kernels'):
    the output equals the sequential reference and the scan at the block's own chunk size."""
    torch.manual_seed(3)
    block = randomize(Mamba2(d_model=12, d_state=6, headdim=6, chunk_size=256, use_kernels=False)).double()
    u = torch.randn(1, 300, 12, dtype=torch.float64)  # more than one 256-chunk and several 64-chunks
    small = block(u)
    expected = mamba2_sequential_reference(block, u)
    assert ((small - expected).norm() / expected.norm()).item() < 1e-10
    monkeypatch.setattr(mamba2, "CPU_CHUNK", 1_000_000)
    whole = block(u)
    assert ((small - whole).norm() / whole.norm()).item() < 1e-12
