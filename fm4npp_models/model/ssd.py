"""The Mamba2 state-space-duality (SSD) scan in pure PyTorch: the sequential recurrence and the chunked algorithm.

For every batch element and head, with a scalar decay per time step (Mamba2's "scalar times identity" A):

    S_t = exp(dt_t A) S_{t-1} + dt_t x_t B_t^T        S: (headdim p, d_state n), S_{-1} = initial state (or 0)
    y_t = S_t C_t + D x_t

Shapes: b batch, L sequence length, h heads, p head dimension, g groups, n state size. The heads share the B and C
projections in groups: head i reads group i // (h // g). dt > 0 (softplus already applied) and A < 0, so every step
decays the state by exp(dt A) in (0, 1].

`ssd_sequential` is the definition, a loop over time. `ssd_chunked` computes the same in chunks of T steps (Dao & Gu
2024, "Transformers are SSMs", section 6): inside a chunk, y is a masked "attention" of C_i over dt_j B_j weighted by
the decay from j to i (quadratic in T); across chunks only the state is carried, one step per chunk. Both run in the
dtype of x; in float64 they agree to rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_shapes(x, dt, A, B, C, D, initial_state) -> None:
    """Raise ValueError unless the shapes fit together (names as in the module docstring)."""
    b, L, h, p = x.shape
    g, n = B.shape[-2:]
    if dt.shape != (b, L, h) or A.shape != (h,) or B.shape != (b, L, g, n) or C.shape != (b, L, g, n):
        raise ValueError(
            f"shapes do not fit: x {tuple(x.shape)} (b, L, h, p), dt {tuple(dt.shape)} (b, L, h), A {tuple(A.shape)} "
            f"(h,), B {tuple(B.shape)} and C {tuple(C.shape)} (b, L, g, n)"
        )
    if h % g:
        raise ValueError(f"the number of heads ({h}) must be a multiple of the number of groups ({g})")
    if D is not None and D.shape != (h,):
        raise ValueError(f"D has shape {tuple(D.shape)}, expected ({h},)")
    if initial_state is not None and initial_state.shape != (b, h, p, n):
        raise ValueError(f"initial_state has shape {tuple(initial_state.shape)}, expected {(b, h, p, n)}")


def ssd_sequential(x, dt, A, B, C, D=None, initial_state=None):
    """The SSD recurrence, one time step after the other: the definition `ssd_chunked` is tested against.

    x: (b, L, h, p); dt: (b, L, h), > 0; A: (h,), < 0; B, C: (b, L, g, n) with h % g == 0; D: (h,) or None;
    initial_state: (b, h, p, n) or None (zeros).
    Returns y (b, L, h, p) and the final state (b, h, p, n), in the dtype of x.
    """
    _check_shapes(x, dt, A, B, C, D, initial_state)
    b, L, h, p = x.shape
    g, n = B.shape[-2:]
    dtype = x.dtype
    dt, A, B, C = dt.to(dtype), A.to(dtype), B.to(dtype), C.to(dtype)
    B = B.repeat_interleave(h // g, dim=2)  # (b, L, h, n): head i reads group i // (h // g)
    C = C.repeat_interleave(h // g, dim=2)
    decay = torch.exp(dt * A)  # (b, L, h)
    state = x.new_zeros(b, h, p, n) if initial_state is None else initial_state.to(dtype)
    ys = []
    for t in range(L):
        update = (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, :, None, :]  # dt_t x_t B_t^T: (b, h, p, n)
        state = decay[:, t, :, None, None] * state + update
        ys.append(torch.einsum("bhpn,bhn->bhp", state, C[:, t]))  # S_t C_t: (b, h, p)
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(b, 0, h, p)
    if D is not None:
        y = y + D.to(dtype)[:, None] * x
    return y, state


def ssd_chunked(x, dt, A, B, C, chunk_size=256, D=None, initial_state=None):
    """The SSD scan by chunks of T = `chunk_size` steps; same arguments and returns as `ssd_sequential`.

    Any length L works: the sequence is padded at the end to a multiple of T with dt = 0 and x = B = C = 0. A padded
    step leaves the state unchanged (decay exp(0) = 1, no input), and it comes after every real token, so it reaches
    neither a real token's output nor the final state; the padding is cut off before returning.

    Cost: O(L T (n + p)) for the chunks' own matrices plus O(L n p) for the states, in a few batched matrix products;
    the only Python loop is over the L / T chunks. On a CPU, T = 32 to 64 is fastest; the GPU kernels use 256.
    Relies on dt >= 0 and A <= 0 (as the Mamba2 block guarantees): every step's log decay dt A is then <= 0.
    """
    _check_shapes(x, dt, A, B, C, D, initial_state)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    b, L, h, p = x.shape
    g, n = B.shape[-2:]
    r = h // g  # heads per group
    dtype = x.dtype
    dt, A, B, C = dt.to(dtype), A.to(dtype), B.to(dtype), C.to(dtype)
    state = x.new_zeros(b, h, p, n) if initial_state is None else initial_state.to(dtype)
    if L == 0:
        return x.new_zeros(b, 0, h, p), state
    T = chunk_size
    pad = -L % T
    if pad:
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
        dt = F.pad(dt, (0, 0, 0, pad))  # dt = 0: a padded step is the identity for the state
        B = F.pad(B, (0, 0, 0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, 0, 0, pad))
    c = (L + pad) // T

    # Cut the sequence into c chunks, heads before time (step t = chunk k, offset i: t = k T + i), and split the heads
    # into (group, head within the group) where B and C are involved.
    x = x.reshape(b, c, T, h, p).transpose(2, 3).contiguous()  # (b, c, h, T, p)
    dt = dt.reshape(b, c, T, g, r).permute(0, 1, 3, 4, 2)  # (b, c, g, r, T)
    B = B.reshape(b, c, T, g, n).transpose(2, 3)  # (b, c, g, T, n)
    C = C.reshape(b, c, T, g, n).transpose(2, 3)  # (b, c, g, T, n)
    a_cum = torch.cumsum(dt * A.view(g, r, 1), dim=-1)  # a = dt A summed from the chunk's start through step i
    B_dt = B[:, :, :, None] * dt[..., None]  # dt_j B_j: (b, c, g, r, T, n)

    # 1. The chunk's own matrix M, y_i = sum_j M_ij x_j (+ the entering state's part, step 4):
    #    M_ij = (C_i . dt_j B_j) exp(a_{j+1} + ... + a_i) for j <= i, 0 for j > i (the future), D_h for i = j added.
    # The exponents are differences of the cumulative sums, <= 0 for j <= i since a <= 0. Those of the future are
    # >= 0 and could overflow: they are set to 0 before exp (the clamp), and the future entries are then selected
    # away (a select, not a product with 0, so that even an infinite C_i . B_j of a future step gives no NaN).
    log_decay = a_cum[..., :, None] - a_cum[..., None, :]  # (b, c, g, r, T_i, T_j)
    causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
    M = torch.exp(log_decay.clamp_(max=0.0)) * torch.einsum("bcgin,bcgrjn->bcgrij", C, B_dt)
    M = torch.where(causal, M, 0.0)  # (b, c, g, r, T_i, T_j)
    if D is not None:
        M.diagonal(dim1=-2, dim2=-1).add_(D.to(dtype).view(g, r, 1))  # the skip D x_i

    # 2. The state each chunk builds up by its end, as if it started from zero:
    #    sum_j exp(a_{j+1} + ... + a_{T-1}) dt_j x_j B_j^T. States are kept transposed, (n, p), until the return.
    B_end = B_dt * torch.exp(a_cum[..., -1:] - a_cum)[..., None]  # (b, c, g, r, T, n)
    chunk_states = B_end.reshape(b, c, h, T, n).transpose(-1, -2) @ x  # (b, c, h, n, p)

    # 3. Carry the state across chunks: S_k = exp(a summed over chunk k) S_{k-1} + chunk_states_k.
    chunk_decay = torch.exp(a_cum[..., -1]).reshape(b, c, h, 1, 1)
    state = state.transpose(-1, -2)  # (b, h, n, p)
    states_in = []  # the state entering each chunk
    for chunk_state, decay_k in zip(chunk_states.unbind(1), chunk_decay.unbind(1), strict=True):
        states_in.append(state)
        state = torch.addcmul(chunk_state, decay_k, state)
    states_in = torch.stack(states_in, dim=1)  # (b, c, h, n, p)

    # 4. The output: the chunk's own part M x plus the entering state's, y_i += exp(a_0 + ... + a_i) S_in C_i.
    C_start = (C[:, :, :, None] * torch.exp(a_cum)[..., None]).reshape(b * c * h, T, n)
    y = M.reshape(-1, T, T) @ x.view(-1, T, p) + C_start @ states_in.view(-1, n, p)  # (b c h, T, p)
    y = y.view(b, c, h, T, p).transpose(2, 3).reshape(b, c * T, h, p)[:, :L]
    return y, state.transpose(-1, -2).contiguous()
