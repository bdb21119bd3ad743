"""spade-viz: see, layer by layer, what a language model is about to say.

    import spade_viz as sv
    lm = sv.load_model("smollm2-135m")
    res = sv.analyze(lm, "France: Paris\\nJapan: Tokyo\\nGermany:")
"""

from .analysis import DECODER_LABELS, Analysis, analyze, retarget
from .errors import InputError, ModelLoadError, SpadeVizError, UnsupportedArchitectureError
from .models import DEFAULT_MODEL, LoadedModel, load_model

__all__ = [
    "DECODER_LABELS",
    "DEFAULT_MODEL",
    "Analysis",
    "InputError",
    "LoadedModel",
    "ModelLoadError",
    "SpadeVizError",
    "UnsupportedArchitectureError",
    "analyze",
    "load_model",
    "retarget",
]
