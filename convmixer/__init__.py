"""ConvMixer ("Patches Are All You Need?"): the tweet, a modular model, converters and counters.

Module map, in three parts (a part imports only itself and the parts below it; nothing here imports ablations/):

    model               what a ConvMixer is
        tweet.py          the 280-character tweet, executed verbatim
        config.py         ConvMixerConfig and the names every knob accepts, free of torch (what --help lists)
        model.py          the readable modular ConvMixer, every ablation knob
        depthwise.py      its depthwise conv, offered on cuDNN or on a Triton kernel (the engine chooses)
        depthwise_kernels.py  the Triton kernels themselves
        registry.py       named configs of the paper's models, timm's names, each with its evaluation settings
        transforms.py     timm's evaluation transform (resize, centre crop, normalise), from a model's settings
        counting.py       parameters, MACs and FLOPs of any config in closed form, free of torch (what training records)
    tools               what one does with a model, each with its command
        interop.py        exact state-dict converters: modular <-> tweet <-> timm <-> locuslab; released checkpoints
        evaluate.py       `python -m convmixer.evaluate`: top-1/top-5 of a released checkpoint, timm's eval transform
        check.py          `python -m convmixer.check`: the modular model computes the tweet's function
        count.py          `python -m convmixer.count`: the closed form checked against an fvcore trace of the module
        throughput.py     inference images/s and peak memory on a device
    plumbing            shared by every part of the toolkit
        runtime.py        devices, precision, CUDA flags, the one timing helper, memory
        arguments.py      argument checks, the precisions' names, optional packages (`require`) and the one-line
                          error every CLI reports; free of torch, the one module of the repository that the
                          runtime imports
"""

import importlib
from typing import Any

# The model needs torch, which takes seconds to import: a command such as `python -m convmixer.count --help`
# imports this package first, so the names below load on first use and --help answers without torch.
_LAZY = {
    "ConvMixer": "convmixer.model",
    "ConvMixerConfig": "convmixer.config",
    "MODEL_CONFIGS": "convmixer.registry",
    "create_model": "convmixer.registry",
    "get_config": "convmixer.registry",
    "list_models": "convmixer.registry",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'convmixer' has no attribute {name!r}")


__all__ = list(_LAZY)
