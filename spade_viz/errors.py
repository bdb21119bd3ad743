"""User-facing errors: each carries a one-line message fit to show as is."""


class SpadeVizError(Exception):
    """Base class: the message is meant for the user, not a traceback."""


class ModelLoadError(SpadeVizError):
    """The model could not be found, fetched, or used."""


class UnsupportedArchitectureError(ModelLoadError):
    """The model loaded, but we do not know how to take its layers apart."""


class InputError(SpadeVizError):
    """A prompt, target or setting the user gave cannot be used."""


# ---------------------------------------------------------------- argument checks for the public API


def _kind(value: object) -> str:
    return "None" if value is None else type(value).__name__


def check_int(name: str, value: object, low: int | None = None, high: int | None = None) -> int:
    """`value` as an int in [low, high] (a whole float or an integer numpy scalar passes), else InputError."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise InputError(f"{name} must be a whole number, not {value!r} ({_kind(value)})")
    value = int(value.__index__())
    if (low is not None and value < low) or (high is not None and value > high):
        raise InputError(f"{name} must be {_range(low, high)}, not {value}")
    return value


def check_number(name: str, value: object, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> float:
    """`value` as a finite float in the given range (open ends with `low_open`/`high_open`), else InputError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise InputError(f"{name} must be a number, not {value!r} ({_kind(value)})")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, not {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise InputError(f"{name} must be a finite number, not {number}")
    too_low = low is not None and (number <= low if low_open else number < low)
    too_high = high is not None and (number >= high if high_open else number > high)
    if too_low or too_high:
        raise InputError(f"{name} must be {_range(low, high, low_open, high_open)}, not {number:g}")
    return number


def _range(low, high, low_open: bool = False, high_open: bool = False) -> str:
    if low is not None and high is not None:
        return f"between {low:g} and {high:g}" + (" (exclusive)" if low_open or high_open else "")
    if low is not None:
        return f"{'above' if low_open else 'at least'} {low:g}"
    return f"{'below' if high_open else 'at most'} {high:g}"


def check_text(name: str, value: object) -> str:
    """`value` as text a tokenizer can read: a str without lone surrogates (what undecodable bytes become
    in a command line), else InputError."""
    if not isinstance(value, str):
        hint = " (decode bytes first, e.g. data.decode('utf-8'))" if isinstance(value, (bytes, bytearray)) else ""
        raise InputError(f"{name} must be text (a str), not {_kind(value)}{hint}")
    bad = lone_surrogate_at(value)
    if bad is not None:
        raise InputError(f"{name} is not valid UTF-8 text: undecodable character {value[bad]!r} at position {bad}; "
                         "save or type it as UTF-8")
    return value


def lone_surrogate_at(text: str) -> int | None:
    """Index of the first lone surrogate (U+D800..U+DFFF) in `text`, or None; fast for clean text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return err.start
    return None
