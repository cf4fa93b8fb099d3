"""Numba kernels over flat arrays and event offsets: cylindrical, binning, raster, knn.

Pure functions of NumPy arrays; they import nothing of the rest of the project. The compiled kernels take many
plain arrays and scalars rather than a bundle: that is what Numba compiles, parallelizes (prange) and caches
(cache=True); a jitclass or typed dict argument would not be cached.
"""
