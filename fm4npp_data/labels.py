"""Truth labels of spacepoints: PID classes, the noise rule, track ids.

PID classes are those of the TPCpp-10M release and the FM4NPP paper: 0 other, 1 pion, 2 kaon, 3 proton, 4 electron
(charge conjugates together). Noise: the truth particle's transverse momentum is below the cut (default 60 MeV/c);
the release's code uses p_T, the paper's text says momentum p, so both are offered.
"""

from __future__ import annotations

import numpy as np

from . import geometry as g

PID_CLASSES = ("other", "pion", "kaon", "proton", "electron")
#: The noise tag's classes: False (signal) and True (noise).
NOISE_CLASSES = ("signal", "noise")
_PID_PDG = {211: 1, 321: 2, 2212: 3, 11: 4}


def pid_from_pdg(pdg: np.ndarray) -> np.ndarray:
    """PID class (int8) of PDG codes: |211| -> 1, |321| -> 2, |2212| -> 3, |11| -> 4, anything else -> 0."""
    a = np.abs(np.asarray(pdg, dtype=np.int64))
    out = np.zeros(a.shape, np.int8)
    for code, cls in _PID_PDG.items():
        out[a == code] = cls
    return out


def noise_from_momentum(px, py, pz, cut: float = g.NOISE_CUT, variable: str = "pt") -> np.ndarray:
    """Noise flag: the particle's p_T (variable="pt", the release's rule) or p (variable="p") is below `cut`."""
    px, py, pz = (np.asarray(a, dtype=np.float64) for a in (px, py, pz))
    if variable == "pt":
        value = np.hypot(px, py)
    elif variable == "p":
        value = np.sqrt(px * px + py * py + pz * pz)
    else:
        raise ValueError(f"noise variable must be 'pt' or 'p', not {variable!r}")
    return value < cut
