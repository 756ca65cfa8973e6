"""Benchmarks of the toolkit, run from the repository root as modules, so the toolkit need not be installed:
`python -m benchmarks.train_speed` (the training engine against reference_recipe.py, the locuslab recipe),
`python -m benchmarks.kernels` (the depthwise conv per kernel size, layout and implementation) and
`python -m benchmarks.gpu_check` (one command that checks the toolkit on a GPU machine).
"""
