"""Runs on disk: `run` (run folders: config.json + safetensors), `published` (the released FM4NPP checkpoints)
and `importing` (a released checkpoint written as a run). None of them imports the model class.
"""
