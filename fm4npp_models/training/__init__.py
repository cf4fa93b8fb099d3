"""The training utilities shared by the recipes: `options` (torch-free option dataclasses) and `loop` (fit:
distributed set-up, checkpoints, the log, the progress bar, signals).
"""
