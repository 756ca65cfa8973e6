"""Ablation sweeps for ConvMixer: datasets, a device-resident training engine, and a resumable sweep runner.

Module map, top to bottom (each layer imports only the layers below it):

    run.py              `python -m ablations.run`: parse the command line, print the plan (or the dry-run table),
                        run it, print the end
    train.py            `python -m ablations.train`: one run, on one process or on several under torchrun (DDP), into
                        a result folder as the sweep writes it
    sweep/              what to run and how to run it
        presets.py        named recipes (smoke, cifar10, cifar10-jpeg, paper-cifar10, imagenet, imagenet-budget,
                          imagenette), the data each needs, and the key table of --help
        grid.py           --set/--grid/--vary -> the list of RunConfigs
        study.py          a studies/*.toml file -> the same
        plan.py           which runs train (again), their data checked and recorded, running them, how it ended
        local.py          the local launcher: worker processes per device slot, and its options
        slurm.py          the SLURM launcher: one job array, followed to its end; its options, checked
        progress.py       the tqdm bars and plain lines a researcher watches
        execute.py        the steps both launchers share: run one config in its folder, end a run in the sweep
    engine/             one training run, on one device or on several processes (DDP)
        train.py          model, optimiser, resumable epochs, metrics
        distributed.py    a run on several processes: the process group (torchrun's env://), synced BatchNorm, DDP
        schedule.py       learning-rate schedules
        setup.py          the memory layout and depthwise conv a run uses ("auto": the fastest, timed)
    data/               the images a run trains on
        sources.py        CIFAR, Imagenette, ImageFolder trees, archives and shards, the synthetic set -> finished
                          splits (held, or streamed); the data record; empty classes
        shards.py         WebDataset tar shards read by index (pread, never whole); `python -m ablations.data.shards`
        decode.py         image files -> one uint8 array (or their sizes), on every core (forked workers); size limits
        stream.py         a streamed image in a loader worker: training crop from the full-size file, eval transform,
                          decode on the CPU or on the device (nvJPEG)
        synthetic.py      the synthetic task
        loaders.py        splits placed on the device, batched; or streamed by persistent prefetching workers, timed
        augment.py        batched augmentation on the device
    store/              the result folder
        store.py          Store: the sweep folder of run folders, run states, summary.csv, damaged files' fates
        locks.py          one sweep per folder, one job per run: the locks, beside the files or under --lock-dir
        files.py          reading (validated by type) and writing each run file; a damaged file's error and advice
        schema.py         what each run file holds: names, statuses, the fields of config/metrics/history/data.json,
                          checkpoint keys, rank faults
    design.py           sweep.json's format: Design, one sweep's design (the store reads and writes it)
    config.py           RunConfig: every key, what it accepts, the run id, parsing a key's value; data_root as recorded
    atomic.py           whole-file and whole-folder writes, and clearing what killed writers left

Import rules (tests/test_layers.py checks them on every module):
- convmixer/ imports nothing of ablations/ or analysis/; ablations/config.py imports only convmixer/.
- design.py imports only config.py; store/ only itself, design.py, config.py, atomic.py and convmixer/; data/ only
  config.py, atomic.py and convmixer/.
- engine/ imports data/, store/, config.py, atomic.py and convmixer/; never sweep/ or run.py.
- sweep/ reaches engine/ only through execute.py, and data/ only through plan.py (which loads each dataset once
  before the sweep, to check it and record it) and presets.py (the torch-free front of data/, for the default
  location of the data a preset needs); presets, grid and study import only config.py, each other and (grid)
  design.py (and presets the model registry, whose ConvMixer-256/8 the CIFAR-10 recipe trains).
- nothing imports run.py or train.py; analysis/ imports only design.py, config.py, store/, atomic.py and data/ of
  ablations/.
"""
