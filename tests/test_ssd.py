"""The chunked SSD scan against the sequential recurrence (its definition) and against a case computed by hand."""

import math

import pytest
import torch
import torch.nn.functional as F

from fm4npp_models.model.ssd import ssd_chunked, ssd_sequential


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def random_inputs(b, L, h, p, n, g, dtype=torch.float64, seed=0):
    """x, dt (> 0), A (< 0, in the block's init range), B, C, D, initial state: realistic magnitudes."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, L, h, p, generator=gen, dtype=dtype)
    dt = F.softplus(torch.randn(b, L, h, generator=gen, dtype=dtype) - 2.0)
    A = -torch.empty(h, dtype=dtype).uniform_(1.0, 16.0, generator=gen)
    B = torch.randn(b, L, g, n, generator=gen, dtype=dtype)
    C = torch.randn(b, L, g, n, generator=gen, dtype=dtype)
    D = torch.randn(h, generator=gen, dtype=dtype)
    initial_state = torch.randn(b, h, p, n, generator=gen, dtype=dtype)
    return x, dt, A, B, C, D, initial_state


@pytest.mark.parametrize(
    ("b", "L", "h", "p", "n", "g", "chunk"),
    [
        (2, 37, 4, 3, 5, 2, 8),  # L not a multiple of the chunk
        (1, 5, 4, 2, 3, 1, 16),  # L < chunk
        (2, 1, 2, 3, 2, 1, 4),  # L = 1
        (1, 64, 6, 4, 3, 3, 16),  # L a multiple of the chunk, 3 groups
        (3, 50, 4, 2, 4, 4, 7),  # one head per group, an odd chunk
        (1, 40, 2, 5, 3, 1, 40),  # L = chunk
        (2, 33, 8, 4, 2, 2, 1),  # chunks of one step
        (1, 300, 4, 8, 16, 1, 256),  # the default chunk, two chunks, the second mostly padding
    ],
)
@pytest.mark.parametrize("with_D", [False, True])
@pytest.mark.parametrize("with_initial_state", [False, True])
def test_chunked_equals_sequential_float64(b, L, h, p, n, g, chunk, with_D, with_initial_state):
    x, dt, A, B, C, D, s0 = random_inputs(b, L, h, p, n, g, seed=L + h)
    D = D if with_D else None
    s0 = s0 if with_initial_state else None
    y_ref, state_ref = ssd_sequential(x, dt, A, B, C, D=D, initial_state=s0)
    y, state = ssd_chunked(x, dt, A, B, C, chunk_size=chunk, D=D, initial_state=s0)
    assert y.shape == (b, L, h, p)
    assert state.shape == (b, h, p, n)
    assert y.dtype == state.dtype == torch.float64
    assert relative_error(y, y_ref) < 1e-10
    assert relative_error(state, state_ref) < 1e-10


def test_float32_close_to_float64():
    """In float32 both paths stay within rounding of the float64 result (long sequence, realistic decays)."""
    x, dt, A, B, C, D, s0 = random_inputs(2, 700, 4, 16, 8, 2, seed=3)
    y_true, state_true = ssd_sequential(x, dt, A, B, C, D=D, initial_state=s0)
    as32 = [t.float() for t in (x, dt, A, B, C)]
    for chunk in (32, 256):
        y, state = ssd_chunked(*as32, chunk_size=chunk, D=D.float(), initial_state=s0.float())
        assert y.dtype == state.dtype == torch.float32
        assert relative_error(y.double(), y_true) < 1e-5
        assert relative_error(state.double(), state_true) < 1e-5
    y, state = ssd_sequential(*as32, D=D.float(), initial_state=s0.float())
    assert relative_error(y.double(), y_true) < 1e-5
    assert relative_error(state.double(), state_true) < 1e-5


def test_tiny_case_by_hand():
    """L = 2, h = p = n = 1: S_0 = e^{-1} 1 + 0.5 * 2 * 1, y_0 = 3 S_0 + 0.5 * 2; S_1 = e^{-0.5} S_0 + 0.25 * 3 * 4,
    y_1 = -S_1 + 0.5 * 3 (dt = [0.5, 0.25], A = -2, x = [2, 3], B = [1, 4], C = [3, -1], D = 0.5, S_{-1} = 1)."""
    x = torch.tensor([2.0, 3.0], dtype=torch.float64).view(1, 2, 1, 1)
    dt = torch.tensor([0.5, 0.25], dtype=torch.float64).view(1, 2, 1)
    A = torch.tensor([-2.0], dtype=torch.float64)
    B = torch.tensor([1.0, 4.0], dtype=torch.float64).view(1, 2, 1, 1)
    C = torch.tensor([3.0, -1.0], dtype=torch.float64).view(1, 2, 1, 1)
    D = torch.tensor([0.5], dtype=torch.float64)
    s0 = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    s_first = math.exp(-1.0) + 1.0
    s_second = math.exp(-0.5) * s_first + 3.0
    y_expected = [3.0 * s_first + 1.0, -s_second + 1.5]  # = 3/e + 4 and -e^{-1.5} - e^{-0.5} - 1.5
    results = [ssd_sequential(x, dt, A, B, C, D=D, initial_state=s0)]
    results += [ssd_chunked(x, dt, A, B, C, chunk_size=k, D=D, initial_state=s0) for k in (1, 2, 4)]
    for y, state in results:
        assert y.flatten().tolist() == pytest.approx(y_expected, rel=1e-14)
        assert state.item() == pytest.approx(s_second, rel=1e-14)


def test_gradients_equal_sequential():
    """Backpropagation through the chunked scan gives the recurrence's gradients (float64), for every input."""
    inputs = [t.requires_grad_() for t in random_inputs(2, 23, 4, 3, 5, 2, seed=7)]
    x, dt, A, B, C, D, s0 = inputs
    weights = torch.randn(2, 23, 4, 3, dtype=torch.float64)

    def loss(y, state):
        return (y * weights).sum() + state.square().sum()

    expected = torch.autograd.grad(loss(*ssd_sequential(x, dt, A, B, C, D=D, initial_state=s0)), inputs)
    got = torch.autograd.grad(loss(*ssd_chunked(x, dt, A, B, C, chunk_size=8, D=D, initial_state=s0)), inputs)
    for g_got, g_expected in zip(got, expected, strict=True):
        assert relative_error(g_got, g_expected) < 1e-10


def test_later_steps_do_not_reach_earlier_outputs():
    """Appending steps, even with huge values, leaves the outputs of the earlier steps as they were (causality, and
    the future entries of a chunk are selected away rather than multiplied by 0)."""
    x, dt, A, B, C, D, _ = random_inputs(2, 29, 4, 3, 5, 2, seed=11)
    y, _ = ssd_chunked(x, dt, A, B, C, chunk_size=16, D=D)
    huge = 1e150

    def extend(t):
        return torch.cat([t, torch.full((t.shape[0], 5, *t.shape[2:]), huge, dtype=t.dtype)], dim=1)

    y_longer, _ = ssd_chunked(extend(x), extend(dt), A, extend(B), extend(C), chunk_size=16, D=D)
    assert torch.isfinite(y_longer[:, :29]).all()
    assert relative_error(y_longer[:, :29], y) < 1e-12


def test_empty_sequence():
    x, dt, A, B, C, D, s0 = random_inputs(2, 0, 4, 3, 5, 2)
    for scan in (ssd_sequential, lambda *args, **kw: ssd_chunked(*args, chunk_size=8, **kw)):
        y, state = scan(x, dt, A, B, C, D=D, initial_state=s0)
        assert y.shape == (2, 0, 4, 3)
        assert torch.equal(state, s0)


def test_shape_errors():
    x, dt, A, B, C, D, s0 = random_inputs(2, 10, 4, 3, 5, 2)
    with pytest.raises(ValueError, match="multiple of the number of groups"):
        ssd_chunked(x, dt, A, B[:, :, :1].expand(2, 10, 3, 5), C[:, :, :1].expand(2, 10, 3, 5))
    with pytest.raises(ValueError, match="shapes do not fit"):
        ssd_chunked(x, dt[:, :9], A, B, C)
    with pytest.raises(ValueError, match="D has shape"):
        ssd_sequential(x, dt, A, B, C, D=D[:3])
    with pytest.raises(ValueError, match="initial_state has shape"):
        ssd_chunked(x, dt, A, B, C, initial_state=s0[:1])
    with pytest.raises(ValueError, match="chunk_size must be positive"):
        ssd_chunked(x, dt, A, B, C, chunk_size=0)
