"""Dense per-example, per-layer arrays built once from a sweep's long table.

A sweep (``spade_viz.sweep``) writes one row per (example, layer, decoder) with at least
``example_id, layer, decoder, top1, correct, agree_final, entropy``. Everything the exit
simulation does is vectorised numpy over the ``[examples, layers]`` arrays made here, so a
threshold change never touches the model or the frame again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError

REQUIRED_COLUMNS = ("example_id", "layer", "decoder", "top1", "correct", "agree_final", "entropy")
LENGTH_COLUMNS = ("n_tokens", "num_tokens", "length", "prompt_tokens", "tokens")
GOLD_COLUMNS = ("gold", "gold_token", "answer")


class SweepFormatError(InputError):
    """A sweep table that cannot be turned into exit arrays; the message says why in one line."""


@dataclass
class ExitArrays:
    """Per decoder, ``[N, L+1]`` arrays of the fields the exit policies read."""

    example_ids: np.ndarray  # [N] object (str)
    n_tokens: np.ndarray  # [N] int64, with <s>
    num_layers: int
    top1: dict[str, np.ndarray]  # decoder -> [N, L+1] object (token strings)
    correct: dict[str, np.ndarray]  # decoder -> [N, L+1] bool: top-1 is the gold token
    agree_final: dict[str, np.ndarray]  # decoder -> [N, L+1] bool: top-1 is the full model's answer
    entropy: dict[str, np.ndarray]  # decoder -> [N, L+1] float64 (nats)
    gold: np.ndarray | None = None  # [N] object, when the sweep names it
    meta: dict = field(default_factory=dict)
    n_choices: np.ndarray | None = None  # [N] int: answer choices of the example (0: none, whole vocabulary)

    def __len__(self) -> int:
        return len(self.example_ids)

    @property
    def decoders(self) -> list[str]:
        return list(self.entropy)

    def chance_level_warning(self, accuracy: float) -> str | None:
        """A sentence when `accuracy` is within two binomial standard errors of guessing among the
        choices: exit operating points then measure nothing (any layer, even 0, is as good)."""
        if self.n_choices is None or not len(self) or not (self.n_choices > 0).any():
            return None
        chance = float(np.where(self.n_choices > 0, 1.0 / np.maximum(self.n_choices, 1), 0.0).mean())
        margin = 2 * np.sqrt(chance * (1 - chance) / len(self))
        if accuracy >= chance + margin:
            return None
        return (f"The full model's accuracy ({accuracy:.1%}) is at the level of guessing among the choices "
                f"({chance:.1%}): early exit cannot lose accuracy it never had, so its speedups here mean nothing.")

    def require(self, decoder: str, purpose: str = "") -> None:
        """Fail with a one-line hint when the sweep lacks `decoder` (`purpose` ends the message's clause)."""
        if decoder not in self.entropy:
            have = ", ".join(self.decoders) or "none"
            hint = " (fit linear SPADE first: `python -m spade_viz calibrate`)" if decoder == "linear_spade" else ""
            raise SweepFormatError(f"the sweep has no '{decoder}' decoder{purpose}; it has {have}{hint}")

    @property
    def final_correct(self) -> np.ndarray:
        """[N] whether the full model's answer is the gold token."""
        for name in ("spade", "logit_lens", *self.decoders):
            if name in self.correct:
                return self.correct[name][:, self.num_layers]
        raise SweepFormatError("the sweep has no decoder")

    @property
    def final_answer(self) -> np.ndarray:
        for name in ("spade", "logit_lens", *self.decoders):
            if name in self.top1:
                return self.top1[name][:, self.num_layers]
        raise SweepFormatError("the sweep has no decoder")

    def calibration_split(self) -> tuple["ExitArrays", "ExitArrays"]:
        """(calibration, held-out): every other example each, so a choice made on the first is scored
        on examples it never saw (interleaved: a file sorted by topic still lands on both sides)."""
        rows = np.arange(len(self))
        return self.subset(rows % 2 == 0), self.subset(rows % 2 == 1)

    def subset(self, rows: np.ndarray) -> "ExitArrays":
        """The same arrays for the examples `rows` only (an index or boolean mask over N)."""
        pick = lambda d: {k: v[rows] for k, v in d.items()}  # noqa: E731
        return ExitArrays(
            self.example_ids[rows], self.n_tokens[rows], self.num_layers, pick(self.top1), pick(self.correct),
            pick(self.agree_final), pick(self.entropy), None if self.gold is None else self.gold[rows], dict(self.meta),
            None if self.n_choices is None else self.n_choices[rows],
        )

    def to_frame(self) -> pd.DataFrame:
        """The long table again (one row per example, layer and decoder): what `exit-curve --sweep` reads."""
        n, width = len(self), self.num_layers + 1
        frames = []
        for decoder in self.decoders:
            frame = pd.DataFrame({
                "example_id": np.repeat(self.example_ids, width),
                "layer": np.tile(np.arange(width), n),
                "decoder": decoder,
                "top1": self.top1[decoder].ravel(),
                "correct": self.correct[decoder].ravel(),
                "agree_final": self.agree_final[decoder].ravel(),
                "entropy": self.entropy[decoder].ravel(),
                "n_tokens": np.repeat(self.n_tokens, width),
            })
            if self.gold is not None:
                frame["gold"] = np.repeat(self.gold, width)
            if self.n_choices is not None:
                frame["n_choices"] = np.repeat(self.n_choices, width)
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_frame(
        cls, frame: pd.DataFrame, default_length: int | None = None, meta: dict | None = None
    ) -> "ExitArrays":
        """Pivot a long sweep table. Every (example, decoder) must cover layers 0..L."""
        if not isinstance(frame, pd.DataFrame) or frame.empty:
            raise SweepFormatError("the sweep table is empty")
        frame = frame.rename(columns={c: c.strip().lower() for c in frame.columns if isinstance(c, str)})
        missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
        if missing:
            raise SweepFormatError(
                f"the sweep table lacks column(s) {', '.join(missing)} (needs {', '.join(REQUIRED_COLUMNS)})"
            )
        try:
            layer = pd.to_numeric(frame["layer"], errors="raise").to_numpy()
        except (ValueError, TypeError):
            raise SweepFormatError("the 'layer' column must hold integers") from None
        if np.any(layer != np.round(layer)) or np.any(layer < 0):
            raise SweepFormatError("the 'layer' column must hold integers 0..L")
        layer = layer.astype(np.int64)
        num_layers = int(layer.max())
        if num_layers < 1:
            raise SweepFormatError("the sweep needs layers 0..L with L >= 1")
        ex_codes, example_ids = pd.factorize(frame["example_id"].astype(str), sort=False)
        n_examples = len(example_ids)
        dec_codes, decoders = pd.factorize(frame["decoder"].astype(str).str.strip(), sort=False)
        entropy_all = pd.to_numeric(frame["entropy"], errors="coerce").to_numpy(dtype=np.float64)
        if np.isnan(entropy_all).any():
            bad = int(np.nonzero(np.isnan(entropy_all))[0][0])
            raise SweepFormatError(f"row {bad + 2}: 'entropy' is not a number")
        correct_all = _bool_column(frame["correct"], "correct")
        agree_all = _bool_column(frame["agree_final"], "agree_final")
        top1_all = frame["top1"].astype(str).to_numpy(dtype=object)

        top1, correct, agree, entropy = {}, {}, {}, {}
        for code, decoder in enumerate(decoders):
            rows = dec_codes == code
            ex, lay = ex_codes[rows], layer[rows]
            count = np.zeros((n_examples, num_layers + 1), dtype=np.int64)
            np.add.at(count, (ex, lay), 1)
            if (count > 1).any():
                i, j = np.argwhere(count > 1)[0]
                raise SweepFormatError(f"example {example_ids[i]!r}, layer {j}: more than one '{decoder}' row")
            if (count == 0).any():
                i, j = np.argwhere(count == 0)[0]
                raise SweepFormatError(
                    f"example {example_ids[i]!r} has no '{decoder}' row for layer {j} "
                    f"(every decoder needs layers 0..{num_layers})"
                )
            top1[decoder] = np.empty((n_examples, num_layers + 1), dtype=object)
            top1[decoder][ex, lay] = top1_all[rows]
            correct[decoder] = np.zeros((n_examples, num_layers + 1), dtype=bool)
            correct[decoder][ex, lay] = correct_all[rows]
            agree[decoder] = np.zeros((n_examples, num_layers + 1), dtype=bool)
            agree[decoder][ex, lay] = agree_all[rows]
            entropy[decoder] = np.zeros((n_examples, num_layers + 1), dtype=np.float64)
            entropy[decoder][ex, lay] = entropy_all[rows]

        n_tokens = _lengths(frame, ex_codes, n_examples, default_length)
        gold = None
        for name in GOLD_COLUMNS:
            if name in frame.columns:
                gold = np.empty(n_examples, dtype=object)
                gold[ex_codes] = frame[name].astype(str).to_numpy(dtype=object)
                break
        n_choices = None
        if "n_choices" in frame.columns:
            values = pd.to_numeric(frame["n_choices"], errors="coerce").fillna(0).to_numpy()
            n_choices = np.zeros(n_examples, dtype=np.int64)
            n_choices[ex_codes] = values.astype(np.int64)
        return cls(
            np.asarray(example_ids, dtype=object), n_tokens, num_layers, top1, correct, agree, entropy, gold,
            dict(meta or {}), n_choices,
        )

    @classmethod
    def from_sweep(cls, result) -> "ExitArrays":
        """Straight from a `spade_viz.sweep.SweepResult` (no CSV round trip)."""
        if result.num_examples == 0:
            raise SweepFormatError("the sweep has no examples")
        token = np.vectorize(result.token, otypes=[object])
        top1 = {name: token(ids) for name, ids in result.top1.items()}
        meta = {"model": result.model_name, "fingerprint": result.fingerprint, "dataset": result.dataset_name,
                "dataset_hash": result.dataset_hash, "settings": dict(result.settings),
                "linear_spade_source": result.linear_spade_source}
        if isinstance(result.info.get("cost"), dict):
            meta["cost"] = result.info["cost"]
        return cls(
            example_ids=np.asarray(result.example_ids, dtype=object),
            n_tokens=np.asarray(result.n_tokens, dtype=np.int64),
            num_layers=int(result.num_layers),
            top1=top1,
            correct={k: np.asarray(v, dtype=bool) for k, v in result.correct.items()},
            agree_final={k: np.asarray(v, dtype=bool) for k, v in result.agree_final.items()},
            entropy={k: np.asarray(v, dtype=np.float64) for k, v in result.entropy.items()},
            gold=token(np.asarray(result.gold_ids)),
            meta=meta,
            n_choices=np.asarray(result.n_choices, dtype=np.int64),
        )

    @classmethod
    def from_csv(cls, path: str | Path, default_length: int | None = None) -> "ExitArrays":
        """Read a sweep CSV (and its meta JSON beside it, when there is one). Leading `#` lines (the
        header an app download writes: model, task, settings) are skipped."""
        path = Path(path)
        if not path.is_file():
            raise SweepFormatError(f"no such sweep file: {path}")
        try:
            frame = pd.read_csv(path, keep_default_na=False, na_values=[], dtype={"top1": str, "example_id": str},
                                skiprows=_leading_comment_lines(path))
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
            raise SweepFormatError(f"{path.name} is not a readable CSV: {str(err).splitlines()[0]}") from None
        return cls.from_frame(frame, default_length=default_length, meta=read_sweep_meta(path))


def _leading_comment_lines(path: Path) -> int:
    """How many lines at the head of a text file start with '#' (0 for a file that is not text)."""
    count = 0
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if not line.startswith("#"):
                    break
                count += 1
    except (OSError, UnicodeDecodeError):
        return 0
    return count


def sweep_meta_paths(path: Path) -> list[Path]:
    """Where a sweep's metadata may sit beside it: results.meta.json or results.csv.meta.json."""
    path = Path(path)
    return [path.with_suffix(".meta.json"), path.with_name(path.name + ".meta.json"), path.with_suffix(".json")]


def read_sweep_meta(path: Path) -> dict:
    """The sweep's metadata (model, cost, settings): the first JSON object found beside it
    (`sweep_meta_paths`), or {}."""
    for candidate in sweep_meta_paths(path):
        if candidate.is_file() and candidate != Path(path):
            try:
                data = json.loads(candidate.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict):
                return data
    return {}


def _bool_column(column: pd.Series, name: str) -> np.ndarray:
    if column.dtype == bool:
        return column.to_numpy()
    text = column.astype(str).str.strip().str.lower()
    truthy, falsy = text.isin(["true", "1", "1.0", "yes"]), text.isin(["false", "0", "0.0", "no"])
    bad = ~(truthy | falsy)
    if bad.any():
        row = int(np.nonzero(bad.to_numpy())[0][0])
        raise SweepFormatError(f"row {row + 2}: '{name}' must be true/false, not {column.iloc[row]!r}")
    return truthy.to_numpy()


def _lengths(frame: pd.DataFrame, ex_codes: np.ndarray, n_examples: int, default: int | None) -> np.ndarray:
    for name in LENGTH_COLUMNS:
        if name in frame.columns:
            values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
            if np.isnan(values).any() or (values < 1).any():
                raise SweepFormatError(f"the '{name}' column must hold positive token counts")
            if default is not None:
                raise SweepFormatError(f"the sweep has its own prompt lengths (the '{name}' column), so a typical "
                                       "length (CLI: --length) is not used: drop it")
            lengths = np.zeros(n_examples, dtype=np.int64)
            lengths[ex_codes] = values.astype(np.int64)
            return lengths
    if default is None:
        raise SweepFormatError(
            "the sweep has no per-example length column (n_tokens): give a typical prompt length "
            "(`default_length=N`) to account compute"
        )
    if default < 1:
        raise SweepFormatError("the prompt length must be at least 1 token")
    return np.full(n_examples, int(default), dtype=np.int64)
