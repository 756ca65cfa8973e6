"""ConvMixer ("Patches Are All You Need?"): the tweet, a modular model, converters and counters.

Module map, in three parts (a part imports only itself and the parts below it; nothing here imports ablations/):

    model               what a ConvMixer is
        tweet.py          the 280-character tweet, executed verbatim
        model.py          the readable modular ConvMixer and its config, every ablation knob
        depthwise.py      its depthwise conv, offered on cuDNN or on a Triton kernel (the engine chooses)
        depthwise_kernels.py  the Triton kernels themselves
        registry.py       named configs of the paper's models, timm's names
    tools               what one does with a model, each with its command
        interop.py        exact state-dict converters: modular <-> tweet <-> timm <-> locuslab; released checkpoints
        evaluate.py       `python -m convmixer.evaluate`: top-1/top-5 of a released checkpoint, timm's eval transform
        check.py          `python -m convmixer.check`: the modular model computes the tweet's function
        count.py          `python -m convmixer.count`: parameters, MACs and FLOPs, two ways that must agree
        throughput.py     inference images/s and peak memory on a device
    plumbing            shared by every part of the toolkit
        runtime.py        devices, precision, CUDA flags, the one timing helper, memory, optional packages
        arguments.py      argument checks and the one-line error every CLI reports
"""

from convmixer.model import ConvMixer, ConvMixerConfig
from convmixer.registry import MODEL_CONFIGS, create_model, get_config, list_models

__all__ = ["ConvMixer", "ConvMixerConfig", "MODEL_CONFIGS", "create_model", "get_config", "list_models"]
