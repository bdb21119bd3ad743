"""Server mode: the settings that let a teacher hand the app to a class, and the queue for heavy jobs.

Off by default: a single user on a laptop keeps every power (any model, saved lenses and sweeps,
Streamlit's own limits). `SPADE_VIZ_SERVE=1` switches it on with safe defaults;
`SPADE_VIZ_SERVE=/path/to/serve.toml` names a file of settings (keys as in `ServeSettings`):

    models = ["smollm2-135m", "/srv/models/qwen2.5-0.5b"]   # what visitors may pick (default: the first)
    max_models = 2            # resident at once; past it the least recently used is unloaded
    max_upload_mb = 5
    max_rows = 2000           # rows of an uploaded file
    max_prompt_tokens = 512   # default: the default token limit (spade_viz.limits)
    max_sweep_examples = 300
    max_generate_tokens = 64  # tokens one generation on Explore may follow
    max_heavy_jobs = 1        # sweeps, fitting and training at once across the server; others queue
    visitors_save = false     # may visitors save lenses and sweeps that every visitor then uses

In server mode visitors pick among `models` only (typed ids and paths are refused, and no message
names a file), and their own fitted lenses and sweeps stay in their session. Nothing here imports
Streamlit or torch: `spade_viz.ui` applies it.

The app reads its settings through `ServeSettings.current()`, which never raises: the file is read
at start and again only when it changes; a version that cannot be used is logged for the operator
(with the path and the reason) and the last good settings stay, or, when none was ever good, the
safe server-mode defaults. No visitor sees the path, the reason or the file's text.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

from .errors import InputError
from .limits import DEFAULT_TOKEN_LIMIT

ENV = "SPADE_VIZ_SERVE"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeSettings:
    """Who may load what, and the limits that protect every visitor (see the module doc)."""

    enabled: bool = False
    models: tuple[str, ...] = ()  # empty: the embedded default only
    max_models: int = 1
    max_upload_mb: int = 200  # Streamlit's own default outside server mode
    max_rows: int = 100_000
    max_prompt_tokens: int = 32_768
    max_sweep_examples: int = 100_000
    max_generate_tokens: int = 512  # Explore's generation (the library's own bound)
    max_heavy_jobs: int = 0  # 0: no queue (a single user runs what they start)
    visitors_save: bool = True

    @classmethod
    def from_env(cls, environ: dict | None = None) -> ServeSettings:
        """The settings named by `SPADE_VIZ_SERVE` (unset or "0": server mode off)."""
        value = (os.environ if environ is None else environ).get(ENV, "").strip()
        if value in ("", "0", "false", "no"):
            return cls()
        if value in ("1", "true", "yes"):
            return cls.served()
        return cls.served().with_file(Path(value))

    @classmethod
    def served(cls) -> ServeSettings:
        """Server mode's safe defaults."""
        return cls(enabled=True, max_upload_mb=5, max_rows=2000, max_prompt_tokens=DEFAULT_TOKEN_LIMIT,
                   max_sweep_examples=300, max_generate_tokens=64, max_heavy_jobs=1, visitors_save=False)

    @classmethod
    def current(cls, environ: dict | None = None) -> ServeSettings:
        """The settings in force (what the app calls on every rerun); never raises. The file is read
        again only when it changes; one that cannot be used is logged once for the operator and the
        last good settings of the same source stay (none yet: `served()`)."""
        value = (os.environ if environ is None else environ).get(ENV, "").strip()
        stamp = (value, _signature(value))
        with _CURRENT_LOCK:
            if _CURRENT.get("stamp") == stamp:
                return _CURRENT["settings"]
            try:
                settings = cls.from_env({ENV: value})
            except InputError as err:
                good = _CURRENT.get("settings") if _CURRENT.get("source") == value else None
                log.error("server settings not applied: %s; %s", err,
                          "keeping the last good settings" if good else "using the safe server-mode defaults")
                _CURRENT.update(stamp=stamp, settings=good or cls.served())  # logged once per change
                return _CURRENT["settings"]
            _CURRENT.update(source=value, stamp=stamp, settings=settings)
            return settings

    def with_file(self, path: Path) -> ServeSettings:
        """These settings overridden by a TOML file's keys; unknown keys and bad values are errors."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            raise InputError(f"cannot read the server settings {path}: {err}") from None
        unknown = sorted(set(data) - {f.name for f in fields(self)})
        if unknown:
            raise InputError(f"unknown server settings in {path}: {', '.join(unknown)}")
        values = {}
        for key, value in data.items():
            if key == "models":
                if not (isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value)):
                    raise InputError(f"'models' in {path} must be a non-empty list of model names")
                values[key] = tuple(v.strip() for v in value)
            elif key == "visitors_save":
                if not isinstance(value, bool):
                    raise InputError(f"'visitors_save' in {path} must be true or false")
                values[key] = value
            elif key != "enabled":
                least = 0 if key == "max_heavy_jobs" else 1
                if isinstance(value, bool) or not isinstance(value, int) or value < least:
                    raise InputError(f"'{key}' in {path} must be a whole number of at least {least}")
                values[key] = value
        return ServeSettings(**{**self.__dict__, **values})

    def choices(self, default_model: str) -> tuple[str, ...]:
        """The models visitors may pick, the embedded default when the operator named none."""
        return self.models or (default_model,)

    def allows(self, model: str, default_model: str) -> bool:
        """Whether a visitor may load `model` (outside server mode: anything)."""
        return not self.enabled or model in self.choices(default_model)

    def streamlit_flags(self) -> list[str]:
        """Streamlit's own server settings to match (upload size; XSRF protection on)."""
        return ["--server.maxUploadSize", str(self.max_upload_mb), "--server.enableXsrfProtection", "true"]


def _signature(value: str) -> tuple | None:
    """What moves when the settings file may have changed (None: not a file that can be read)."""
    try:
        st = os.stat(value)
    except (OSError, ValueError):
        return None
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


_CURRENT: dict = {}  # source (the variable's value), stamp and settings `current` last returned
_CURRENT_LOCK = threading.Lock()


class JobQueue:
    """At most `capacity` heavy jobs at once across the server; the others wait in arrival order and
    can show their place in the queue. Capacity 0: no limit."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._changed = threading.Condition()
        self._running = 0
        self._waiting: list[object] = []

    def position(self, ticket: object) -> int:
        """1 for the next job to start; 0 when `ticket` is not waiting."""
        with self._changed:
            return self._waiting.index(ticket) + 1 if ticket in self._waiting else 0

    @contextmanager
    def slot(self, on_wait: Callable[[int], None] = lambda position: None, poll: float = 0.5) -> Iterator[None]:
        """Hold one of the slots for the duration; while waiting, `on_wait(position)` is called now and then."""
        if self.capacity <= 0:
            yield
            return
        ticket = object()
        with self._changed:
            self._waiting.append(ticket)
        try:
            while True:
                with self._changed:
                    if self._running < self.capacity and self._waiting[0] is ticket:
                        self._waiting.pop(0)
                        self._running += 1
                        break
                    position = self._waiting.index(ticket) + 1
                on_wait(position)  # outside the lock: it may draw, or be interrupted by a rerun
                with self._changed:
                    self._changed.wait(timeout=poll)
        except BaseException:  # a visitor who left, or a rerun: give the place up
            with self._changed:
                self._waiting.remove(ticket)
                self._changed.notify_all()
            raise
        try:
            yield
        finally:
            with self._changed:
                self._running -= 1
                self._changed.notify_all()


def main() -> None:
    """Print the Streamlit flags server mode needs (scripts/start.sh reads them); exit 2 on bad settings."""
    try:
        settings = ServeSettings.from_env()
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(" ".join(settings.streamlit_flags()) if settings.enabled else "")


if __name__ == "__main__":
    main()
