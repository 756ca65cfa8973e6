"""ConvMixer ("Patches Are All You Need?"): the tweet, a modular model, converters and counters."""

from convmixer.model import ConvMixer, ConvMixerConfig
from convmixer.registry import MODEL_CONFIGS, create_model, get_config, list_models

__all__ = ["ConvMixer", "ConvMixerConfig", "MODEL_CONFIGS", "create_model", "get_config", "list_models"]
