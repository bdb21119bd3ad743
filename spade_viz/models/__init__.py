"""Model loading and the architecture registry."""

from .loading import DEFAULT_MODEL, DTYPES, LoadedModel, cache_dir, ensure_default_model, load_model
from .registry import ARCHITECTURES, Adapter, ArchSpec, adapter_for

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_MODEL",
    "DTYPES",
    "Adapter",
    "ArchSpec",
    "LoadedModel",
    "adapter_for",
    "cache_dir",
    "ensure_default_model",
    "load_model",
]
