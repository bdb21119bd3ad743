"""Shared fixtures: tiny random models of every family (as real folders) and the real default model."""

from __future__ import annotations

import os
from pathlib import Path

# One thread per math library (set before torch and numpy load; an exported value wins): the tiny
# models gain nothing from more, and on a shared 2-core machine thread pools spinning on a
# descheduled sibling made the fast subset three to four times slower.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pytest  # noqa: E402

import spade_viz as sv  # noqa: E402
from spade_viz.models.loading import cache_dir, ensure_default_model  # noqa: E402
from tiny_models import FAMILIES, save_tiny  # noqa: E402


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory) -> dict[str, Path]:
    """family -> folder holding a saved tiny random model and tokenizer."""
    root = tmp_path_factory.mktemp("tiny")
    return {family: save_tiny(family, root / family) for family in FAMILIES}


@pytest.fixture(scope="session")
def tiny_lms(tiny_folders) -> dict[str, sv.LoadedModel]:
    return {family: sv.load_model(str(folder)) for family, folder in tiny_folders.items()}


@pytest.fixture(scope="session")
def tiny_lm(tiny_lms) -> sv.LoadedModel:
    return tiny_lms["llama"]


@pytest.fixture(scope="session")
def default_lm() -> sv.LoadedModel:
    """The real embedded default model (fetched and converted once into the user cache)."""
    return sv.load_model(sv.DEFAULT_MODEL)


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """A fresh `SPADE_VIZ_CACHE` for sweeps, lenses and tuned-lens training texts (models load before it)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SPADE_VIZ_CACHE", str(cache))
    return cache


@pytest.fixture
def cache_without_lenses(tmp_path, monkeypatch):
    """A cache folder holding only the default model, so lenses a user calibrated don't add columns."""
    ensure_default_model()
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "models").symlink_to(cache_dir() / "models", target_is_directory=True)
    monkeypatch.setenv("SPADE_VIZ_CACHE", str(cache))
    return cache


def pytest_collection_modifyitems(items) -> None:
    """Every test on the real default model is `slow`, also one whose module has no marker for it yet."""
    for item in items:
        if "default_lm" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
