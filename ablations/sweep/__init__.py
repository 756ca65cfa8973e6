"""Sweep: what to run (presets, grids, studies) and how to run it (local and SLURM launchers)."""
