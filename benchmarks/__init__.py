"""Benchmarks of the toolkit, run from the repository root as modules, so the toolkit need not be installed:
`python -m benchmarks.train_speed` (the training engine against reference_recipe.py, the locuslab recipe, with the
bare step and bandwidth from measure.py and the engine's targets from engine_targets.py), `python -m
benchmarks.kernels` (the depthwise conv per kernel size, layout and implementation), `python -m
benchmarks.step_floor` (each op of a training step against its floor: step_model.py prices the ops,
step_profile.py maps torch.profiler's events onto them), `python -m benchmarks.gpu_check` (one command that checks
the toolkit on a GPU machine), `python -m benchmarks.startup` (how long a run's data takes to be ready: cold, warm,
kept), `python -m benchmarks.loader` (the streaming loader's img/s per core, folder vs shards, Pillow vs
torchvision) and `python -m benchmarks.grouped_speed` (N seeds trained as one grouped model, grouped.py and
grouped_train.py, against the same runs one after another: a prototype, not part of the runner);
`bash benchmarks/gpu_session.sh` runs the CUDA tests and the benchmarks in one call on a GPU machine. common.py holds
what they share: a run named as the runner names it (--preset, --set, --data-root) and the one result writer.
"""
