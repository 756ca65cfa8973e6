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
        inprocess.py      the in-process launcher: python -m ablations.train's, a notebook's, the tests'
        progress.py       the tqdm bars and plain lines a researcher watches
        execute.py        the steps every launcher shares: run one config in its folder (as one of its processes),
                          end a run in the sweep (the checkpoint policy), the failure line, the process count's check
    engine/             one training run, on one device or on several processes (DDP)
        train.py          model, optimiser, resumable epochs
        checkpoint.py     a run's checkpoint read back: unusable ones set aside, every rank resuming one epoch
        metrics.py        the divergence rule, and the run's summary metrics.json holds
        modes.py          how a run executes: autocast dtype, torch.compile and its caches, CUDA graphs, fused AdamW,
                          activation checkpointing
        distributed.py    a run on several processes: its Ranks (rank, size, rendezvous), the process group, synced
                          BatchNorm, DDP
        schedule.py       learning-rate schedules
        setup.py          the memory layout and depthwise conv a run uses ("auto": the fastest, timed once per
                          device and shape into a table on disk)
    data/               the images a run trains on
        loaders.py        splits placed on the device, batched; or streamed by persistent prefetching workers, timed;
                          each loader built once for its rank, with what its workers did (`Data.worker_steps`)
        augment.py        batched augmentation on the device
        make_shards.py    `python -m ablations.data.make_shards`: an ImageFolder tree written as WebDataset shards
        stream.py         a streamed image in a loader worker: training crop from the full-size file, eval transform,
                          decode on the CPU or on the device (nvJPEG)
        sources.py        CIFAR, Imagenette, ImageFolder trees, the synthetic set -> finished splits (held, or
                          streamed as their files), loaded once per run; the data record; empty classes
        tree.py           an ImageFolder tree in a folder, tar archive or shard folder: classes, splits, checks,
                          fingerprint, decoding its files
        shards.py         WebDataset tar shards read by index (pread, never whole)
        files.py          which files are images: the one rule of the folder walk, the archive and shard indexes
        decode.py         image files -> one uint8 array (or their sizes), on every core (forked workers); size limits
        synthetic.py      the synthetic task
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
- sweep/ reaches engine/ through execute.py, and the launchers (local, slurm, inprocess) take engine/distributed.py's
  Ranks to hand each process its place; sweep/ reaches data/ only through plan.py (which loads each dataset once
  before the sweep, to check it and record it) and presets.py (the torch-free front of data/, for the default
  location of the data a preset needs); presets, grid and study import only config.py, each other and (grid)
  design.py (and presets the model registry, whose ConvMixer-256/8 the CIFAR-10 recipe trains).
- nothing imports run.py or train.py; analysis/ imports only design.py, config.py, store/, atomic.py and data/ of
  ablations/.
"""
