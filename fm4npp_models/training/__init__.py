"""The training utilities shared by the recipes, kept apart from them as torchtune keeps its own: `options` (the
option dataclasses with every default, torch-free), `distributed` (this process's place under torchrun, its device,
the collectives), `checkpoint` (the run folder's claim, training.json, checkpoints written and restored), `log`
(log.csv, loss.png and the progress bar) and `loop` (fit: the steps, the schedule, validation, stops on signals).
"""
