"""The sweep's disk cache: <cache>/sweeps/<key>.npz (arrays) + <key>.json (everything else).

Never pickle. Keyed by model fingerprint, dtype and device, dataset content, settings and the
hashes of the lenses used; at most `_MAX_CACHED` entries, least recently used dropped first.
Behind it, read-only, the sweeps shipped with the package (`PRECOMPUTED`: the built-in tasks on the
default model, written by scripts/precompute_sweeps.py in the same format, compressed), under the
same keys: a key that misses the disk cache is looked up there, so they are ready at once.

Each entry's JSON carries its own key and a checksum of the arrays and the rest of the JSON: an
entry renamed from another key, edited, truncated or holding a non-finite number is a miss, and the
sweep is computed again.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import zipfile
from importlib import resources
from pathlib import Path

import numpy as np

from ..lenses.affine import AffineLens
from ..lenses.linear_spade import lens_digest
from ..models.loading import LoadedModel, cache_dir
from .results import SWEEP_FORMAT, SweepResult, SweepSettings

_MAX_CACHED = 64
PRECOMPUTED = resources.files("spade_viz") / "assets" / "sweeps"  # shipped sweeps (package data), read-only


def sweep_cache_dir() -> Path:
    """Where cached sweeps live: `sweeps/` under the user cache (`SPADE_VIZ_CACHE` moves it)."""
    return cache_dir() / "sweeps"


def cache_key(lm: LoadedModel, dataset, settings: SweepSettings, plan_key: dict, tuned: AffineLens | None) -> str:
    """The key of a sweep: everything that changes its numbers (`plan_key`: the linear-SPADE plan's)."""
    payload = {
        "format": SWEEP_FORMAT,
        "fingerprint": lm.fingerprint(),
        "dtype": str(lm.dtype),
        "device": lm.device.type,
        "dataset": dataset.source_hash,
        "settings": settings.key(),
        "linear_spade": plan_key,
        "tuned_lens": lens_digest(tuned) if tuned is not None else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def save_cached(key: str, result: SweepResult) -> None:
    """Store a sweep under `key` (written aside, then renamed: never half an entry); drop the least
    recently used beyond `_MAX_CACHED`. A cache that cannot be written is skipped silently."""
    folder = sweep_cache_dir()
    try:
        write_entry(folder, key, result)
    except OSError:
        return  # a cache that cannot be written only costs time
    entries = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[_MAX_CACHED:]:
        for path in (old, old.with_suffix(".npz")):
            path.unlink(missing_ok=True)


def write_entry(folder: Path, key: str, result: SweepResult, compressed: bool = False) -> None:
    """Write one entry, `<key>.npz` + `<key>.json`, into `folder` (aside, then renamed; OSError
    when it cannot be written). `compressed`: zip the arrays (the shipped sweeps)."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"n_tokens": result.n_tokens, "gold_ids": result.gold_ids, "final_ids": result.final_ids,
              "n_choices": result.n_choices}
    for field_name in ("top1", "entropy", "entropy_vocab", "top1_vocab"):
        for name, values in getattr(result, field_name).items():
            arrays[f"{field_name}__{name}"] = values
    meta = {
        "format": SWEEP_FORMAT, "model_name": result.model_name, "fingerprint": result.fingerprint,
        "dataset_name": result.dataset_name, "dataset_hash": result.dataset_hash,
        "num_layers": result.num_layers, "settings": result.settings, "example_ids": result.example_ids,
        "decoders": result.decoders, "vocab": {str(k): v for k, v in result.vocab.items()},
        "skipped": [list(s) for s in result.skipped], "linear_spade_source": result.linear_spade_source,
        "info": result.info,
    }
    tmp_npz = folder / f".{key}.tmp.npz"
    tmp_json = folder / f".{key}.tmp.json"
    (np.savez_compressed if compressed else np.savez)(tmp_npz, **arrays)
    meta["key"] = key
    meta["checksum"] = _checksum(tmp_npz.read_bytes(), meta)
    tmp_json.write_text(json.dumps(meta, ensure_ascii=False))
    tmp_npz.replace(folder / f"{key}.npz")
    tmp_json.replace(folder / f"{key}.json")  # the json marks a complete entry


def load_cached(key: str, lm: LoadedModel | None = None) -> SweepResult | None:
    """The sweep stored under `key`, or None when there is none, it is unreadable or of another
    format, or its arrays do not have the shapes it (and `lm`, when given) implies; a hit marks the
    entry recently used. A key missing on disk is looked up among the shipped sweeps (`PRECOMPUTED`;
    `result.info["precomputed"]` is then True)."""
    folder = sweep_cache_dir()
    result = read_entry(folder, key, lm)
    if result is not None:
        try:
            (folder / f"{key}.json").touch()  # most recently used
        except OSError:
            pass
        return result
    result = read_entry(Path(str(PRECOMPUTED)), key, lm)
    if result is not None:
        result.info = {**(result.info or {}), "precomputed": True}
    return result


def read_entry(folder: Path, key: str, lm: LoadedModel | None = None) -> SweepResult | None:
    """The entry `key` of `folder` (see `load_cached`), or None."""
    meta_path, npz_path = folder / f"{key}.json", folder / f"{key}.npz"
    if not (meta_path.is_file() and npz_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or meta.get("format") != SWEEP_FORMAT or meta.get("key") != key:
            return None
        raw = npz_path.read_bytes()
        if meta.get("checksum") != _checksum(raw, meta):
            return None
        with np.load(io.BytesIO(raw), allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        if not all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f"):
            return None
        fields = {f: {name: arrays[f"{f}__{name}"] for name in meta["decoders"]}
                  for f in ("top1", "entropy", "entropy_vocab", "top1_vocab")}
        result = SweepResult(
            model_name=meta["model_name"], fingerprint=meta["fingerprint"], dataset_name=meta["dataset_name"],
            dataset_hash=meta["dataset_hash"], num_layers=int(meta["num_layers"]), settings=meta["settings"],
            example_ids=list(meta["example_ids"]), n_tokens=arrays["n_tokens"], gold_ids=arrays["gold_ids"],
            final_ids=arrays["final_ids"], n_choices=arrays["n_choices"], vocab={int(k): v for k, v in
                                                                                      meta["vocab"].items()},
            skipped=[tuple(s) for s in meta["skipped"]], linear_spade_source=meta["linear_spade_source"],
            info=meta["info"], from_cache=True, **fields,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError, zipfile.BadZipFile):
        return None
    if not _shapes_fit(result, lm):
        return None
    return result


def _checksum(npz: bytes, meta: dict) -> str:
    """SHA-256 of an entry's arrays (the .npz bytes) and its JSON without the checksum itself."""
    rest = {k: v for k, v in meta.items() if k != "checksum"}
    return hashlib.sha256(npz + json.dumps(rest, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _shapes_fit(result: SweepResult, lm: LoadedModel | None) -> bool:
    """Whether every array has the shape the entry's example count and layer count (and `lm`) imply."""
    n, width = result.num_examples, result.num_layers + 1
    if lm is not None and (result.num_layers != lm.num_layers or result.fingerprint != lm.fingerprint()):
        return False
    vectors = (result.n_tokens, result.gold_ids, result.final_ids, result.n_choices)
    grids = [grid for field_name in ("top1", "entropy", "entropy_vocab", "top1_vocab")
             for grid in getattr(result, field_name).values()]
    return bool(grids) and all(v.shape == (n,) for v in vectors) and all(g.shape == (n, width) for g in grids)


@functools.lru_cache(maxsize=1)
def shipped_sweeps() -> dict[str, dict]:
    """The shipped sweeps by the content hash of the examples they cover: {"key", "fingerprint",
    "settings", "decoders"} each (read once: the package data does not change while it runs)."""
    folder, found = Path(str(PRECOMPUTED)), {}  # (tests that move PRECOMPUTED clear this cache)
    try:
        index = json.loads((folder / "index.json").read_text())
        for entry in index.values():
            meta = json.loads((folder / f"{entry['key']}.json").read_text())
            found[meta["dataset_hash"]] = {"key": entry["key"], "fingerprint": meta["fingerprint"],
                                           "settings": meta["settings"], "decoders": meta["decoders"]}
    except (OSError, ValueError, KeyError, TypeError):
        return found
    return found


def read_shipped(key: str, lm: LoadedModel | None = None) -> SweepResult | None:
    """The shipped sweep under `key` (see `read_entry`), or None."""
    return read_entry(Path(str(PRECOMPUTED)), key, lm)
