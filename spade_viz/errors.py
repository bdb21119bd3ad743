"""User-facing errors: each carries a one-line message fit to show as is."""


class SpadeVizError(Exception):
    """Base class: the message is meant for the user, not a traceback."""


class ModelLoadError(SpadeVizError):
    """The model could not be found, fetched, or used."""


class UnsupportedArchitectureError(ModelLoadError):
    """The model loaded, but we do not know how to take its layers apart."""


class InputError(SpadeVizError):
    """A prompt, target or setting the user gave cannot be used."""
