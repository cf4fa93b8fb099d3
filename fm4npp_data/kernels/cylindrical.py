"""Cylindrical coordinates of spacepoints and the normalization the FM4NPP model reads.

r = sqrt(x^2 + y^2), phi = atan2(y, x) in (-pi, pi], eta = -ln tan(theta / 2) with theta = atan2(r, z), computed as
asinh(z / r) (the same function, accurate near theta = 0 and pi). Inputs are float32; the arithmetic is float64 and
the outputs float32 (phi = -pi after rounding to float32 is returned as +pi). At r = 0, eta is +inf (z > 0), -inf
(z < 0) or 0 (z = 0).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

PI32 = np.float32(math.pi)  # the float32 nearest pi (slightly above it): float32 phi lies in (-PI32, PI32]


@njit(parallel=True, cache=True)
def _cylindrical(x, y, z, r_out, phi_out, eta_out):
    for i in prange(x.shape[0]):
        xi, yi, zi = np.float64(x[i]), np.float64(y[i]), np.float64(z[i])
        r = math.sqrt(xi * xi + yi * yi)
        phi = math.atan2(yi, xi)
        if phi == -math.pi:  # atan2(-0.0, x < 0): keep phi in (-pi, pi]
            phi = math.pi
        if r > 0.0:
            eta = math.asinh(zi / r)
        elif zi > 0.0:
            eta = math.inf
        elif zi < 0.0:
            eta = -math.inf
        else:
            eta = 0.0
        r_out[i] = r
        phi_out[i] = phi
        if phi_out[i] == -PI32:  # a phi just above -pi rounds to -pi in float32: keep (-pi, pi] there too
            phi_out[i] = PI32
        eta_out[i] = eta


def cylindrical(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(r, phi, eta), float32, of flat float32 arrays x, y, z (cm)."""
    x, y, z = (np.ascontiguousarray(a, dtype=np.float32) for a in (x, y, z))
    if not (x.shape == y.shape == z.shape) or x.ndim != 1:
        raise ValueError("x, y and z must be 1-D arrays of the same length")
    r, phi, eta = (np.empty(x.shape[0], np.float32) for _ in range(3))
    _cylindrical(x, y, z, r, phi, eta)
    return r, phi, eta


@njit(parallel=True, cache=True)
def _minmax(values, lo, hi, out):
    scale = 1.0 / (hi - lo)
    for i in prange(values.shape[0]):
        out[i] = (np.float64(values[i]) - lo) * scale


def minmax(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(values - lo) / (hi - lo) as float32: [lo, hi] -> [0, 1] (values outside are not clipped)."""
    if not hi > lo:
        raise ValueError(f"empty range [{lo}, {hi}]")
    values = np.ascontiguousarray(values, dtype=np.float32)
    out = np.empty(values.shape[0], np.float32)
    _minmax(values, float(lo), float(hi), out)
    return out


def zscore(values: np.ndarray, mean: float, std: float) -> np.ndarray:
    """(values - mean) / std as float32."""
    if not std > 0:
        raise ValueError(f"std must be positive, not {std}")
    return minmax(values, mean, mean + std)
