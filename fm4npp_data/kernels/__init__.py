"""Numba kernels over flat arrays and event offsets: cylindrical, binning, raster, knn.

Pure functions of NumPy arrays; they import nothing of the rest of the project.
"""
