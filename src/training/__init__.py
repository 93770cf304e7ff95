"""Training a cell: the recipe (recipe.py) over the SFT loop (loop.py), with which run trains which
cells (milestones.py), the study's optimizer and schedules (optim.py), resumable states
(checkpoint.py), throughput and MFU (throughput.py), processes (dist.py), DeepSpeed (deepspeed.py)
and the torchrun worker (worker.py)."""
