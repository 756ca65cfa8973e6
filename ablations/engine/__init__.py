"""Engine: one training run (model, optimiser, schedule, checkpoints) on one device."""
