"""Figures (matplotlib, the `plot` extra): `events` (event displays) and `dataset` (a repository's distributions)."""
