"""The foundation model: `config` (sizes, torch-free), `embedding`, `ssd` (the pure-PyTorch Mamba2 scan),
`mamba2` (the block), `backbone` (the FM) and `mup` (μP).
"""
