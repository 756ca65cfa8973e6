"""Ablation sweeps for ConvMixer: datasets, a GPU-resident training engine, and a resumable grid runner."""
