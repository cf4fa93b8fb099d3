"""Derived columns and dataset statistics: `prepare` (binning, raster order, neighbour targets, difficulty bins)."""
