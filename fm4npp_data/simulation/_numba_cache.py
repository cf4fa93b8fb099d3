"""Keep Numba's on-disk cache honest about geometry.py.

Numba invalidates a cached kernel only when the kernel's own source file changes, but the kernels here read their
constants from fm4npp_data/geometry.py at compile time. This drops the cached machine code of this package whenever
geometry.py (or a kernel file) changed since it was compiled.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_SOURCES = (
    _HERE.parent / "geometry.py",
    _HERE / "physics.py",
    _HERE / "transport.py",
    _HERE / "generator.py",
    _HERE / "hadronic.py",
    _HERE / "decays.py",
)


def drop_stale_numba_cache() -> None:
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in _SOURCES if p.exists())).hexdigest()
    cache = _HERE / "__pycache__"
    stamp = cache / "fm4npp-kernels.sha256"
    try:
        if stamp.exists() and stamp.read_text() == digest:
            return
        for path in cache.glob("*.nb[ic]"):
            path.unlink(missing_ok=True)
        cache.mkdir(exist_ok=True)
        stamp.write_text(digest)
    except OSError:  # read-only installation: Numba then compiles in memory or in NUMBA_CACHE_DIR
        return
