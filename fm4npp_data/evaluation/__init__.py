"""The benchmark's scoring, NumPy and polars only (no torch): `metrics` and `leaderboard`."""
