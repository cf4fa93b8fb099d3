"""Fast simulation: PYTHIA 8 p+p events at 200 GeV and the sPHENIX TPC response, written as sPHENIX ROOT files."""

from ._numba_cache import drop_stale_numba_cache

drop_stale_numba_cache()

from ..errors import SimulationError  # noqa: E402
from .runner import TRIGGERS, RunSummary, SimulateOptions, simulate  # noqa: E402
from .writer import LAYOUTS  # noqa: E402

__all__ = ["LAYOUTS", "TRIGGERS", "RunSummary", "SimulateOptions", "SimulationError", "simulate"]
