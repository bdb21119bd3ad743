"""What a sweep is asked (`SweepSettings`) and what it returns (`SweepResult`, the CSV)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..decoders import SWEEP_COLUMNS  # the order of columns and rows
from ..errors import InputError, check_int, check_number
from ..files import atomic_output, atomic_write_text, check_output
from ..lenses.spade import POSITION_MODES
from ..limits import DEFAULT_TOKEN_LIMIT

SWEEP_FORMAT = "spade-viz-sweep-2"  # 2: n_choices per example
CSV_COLUMNS = (
    "example_id", "layer", "decoder", "top1", "top1_id", "correct", "agree_final",
    "entropy", "entropy_vocab", "n_tokens", "n_choices",
)


KEYED_TOKEN_LIMIT = 512  # see SweepSettings.keyed


@dataclass(frozen=True)
class SweepSettings:
    """What changes the numbers (all of it goes into the cache key) and how work is batched."""

    batch_size: int = 16  # examples per forward pass (batching does not change results)
    spade_positions: str = "original"  # position id of the <a> row: "original" (T) or "renumbered"
    linear_spade: str = "auto"  # auto | saved | crossfit | off (see `plan_linear_spade`)
    folds: int = 5  # k of the k-fold cross-fitting of linear SPADE
    ridge: float = 1e-2  # ridge of the cross-fitted maps (a saved map keeps its own)
    tuned_lens: bool = True  # add the tuned lens when one is saved for this model
    max_tokens: int = DEFAULT_TOKEN_LIMIT
    # linear SPADE's entropy over only these tokens where an example has no choices (the real
    # exit's cheap confidence, `exit.honest`); () = over the whole vocabulary
    confidence_shortlist: tuple[int, ...] = ()

    def __post_init__(self):
        if self.spade_positions not in POSITION_MODES:
            raise InputError(f"spade_positions must be one of {', '.join(POSITION_MODES)}")
        if self.linear_spade not in ("auto", "saved", "crossfit", "off"):
            raise InputError("linear_spade must be one of auto, saved, crossfit, off")
        check_int("the batch size", self.batch_size, 1)
        check_int("the number of cross-fitting folds", self.folds, 2)
        check_number("the ridge", self.ridge, 0, low_open=True)
        check_int("max_tokens", self.max_tokens, 2)
        shortlist = self.confidence_shortlist
        if not isinstance(shortlist, tuple | list) or not all(isinstance(t, int) and t >= 0 for t in shortlist):
            raise InputError("confidence_shortlist must be token ids (non-negative integers)")
        object.__setattr__(self, "confidence_shortlist", tuple(sorted(set(shortlist))))
        if not isinstance(self.tuned_lens, bool):
            raise InputError(f"tuned_lens must be True or False, not {self.tuned_lens!r}")

    def keyed(self, prepared) -> SweepSettings:
        """These settings as a sweep's key records them for the `prepared` examples: a token limit they
        all fit under changes nothing, so it is keyed as `KEYED_TOKEN_LIMIT`, the limit sweeps were keyed
        by before it rose (their cache entries and the shipped sweeps stay valid)."""
        longest = max((len(p.token_ids) for p in prepared), default=0)
        if longest <= min(self.max_tokens, KEYED_TOKEN_LIMIT):
            return replace(self, max_tokens=KEYED_TOKEN_LIMIT)
        return self

    def makes(self, other: SweepSettings, prepared) -> bool:
        """Whether a sweep of the `prepared` examples made with `other` is the one these settings make."""
        return self.keyed(prepared).key() == other.keyed(prepared).key()

    def key(self) -> dict:
        """The settings that change results (batch size does not)."""
        data = asdict(self)
        data.pop("batch_size")
        if not self.confidence_shortlist:  # the key of every sweep made before the shortlist existed
            data.pop("confidence_shortlist")
        return data


@dataclass
class SweepResult:
    """Per decoder, arrays [examples, layers 0..L]; plus a long frame (`frame()`, the CSV)."""

    model_name: str
    fingerprint: str
    dataset_name: str
    dataset_hash: str
    num_layers: int
    settings: dict
    example_ids: list[str]
    n_tokens: np.ndarray  # int64 [N]: tokens the model reads per example (with <s>)
    gold_ids: np.ndarray  # int64 [N]
    final_ids: np.ndarray  # int64 [N]: the full model's answer (best choice when the row has choices)
    n_choices: np.ndarray  # int64 [N]: answer choices of the example (0: none, the whole vocabulary)
    top1: dict[str, np.ndarray]  # int64 [N, L+1]
    entropy: dict[str, np.ndarray]  # float32 [N, L+1], over the choices when the row has them
    entropy_vocab: dict[str, np.ndarray]  # float32 [N, L+1], over the whole vocabulary
    top1_vocab: dict[str, np.ndarray]  # int64 [N, L+1], over the whole vocabulary
    vocab: dict[int, str]  # strings of every token id in the arrays
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (example id, reason)
    linear_spade_source: str = ""  # how linear SPADE was fitted: never on the example it scores
    info: dict = field(default_factory=dict)  # timings, lens hashes, held-out scores...
    from_cache: bool = False

    @property
    def decoders(self) -> list[str]:
        return [name for name in SWEEP_COLUMNS if name in self.top1]

    @property
    def num_examples(self) -> int:
        return len(self.example_ids)

    @property
    def has_choices(self) -> np.ndarray:
        return self.n_choices > 0

    @property
    def correct(self) -> dict[str, np.ndarray]:
        return {name: top1 == self.gold_ids[:, None] for name, top1 in self.top1.items()}

    @property
    def agree_final(self) -> dict[str, np.ndarray]:
        return {name: top1 == self.final_ids[:, None] for name, top1 in self.top1.items()}

    def accuracy(self, decoder: str) -> np.ndarray:
        """Fraction of examples whose top-1 is the gold token, per layer [L+1]."""
        return self.correct[decoder].mean(0) if self.num_examples else np.zeros(self.num_layers + 1)

    def agreement(self, decoder: str) -> np.ndarray:
        """Fraction of examples whose top-1 is the full model's answer, per layer [L+1]."""
        return self.agree_final[decoder].mean(0) if self.num_examples else np.zeros(self.num_layers + 1)

    def token(self, token_id: int) -> str:
        """The string of a token id, or `#id` for one the sweep kept no string for."""
        return self.vocab.get(int(token_id), f"#{int(token_id)}")

    def frame(self) -> pd.DataFrame:
        """Long table, one row per (example, decoder, layer): the CSV columns."""
        n, layers = self.num_examples, self.num_layers + 1
        frames = []
        correct, agree = self.correct, self.agree_final
        for name in self.decoders:
            ids = self.top1[name].ravel()
            frames.append(pd.DataFrame({
                "example_id": np.repeat(np.asarray(self.example_ids, dtype=object), layers),
                "layer": np.tile(np.arange(layers), n),
                "decoder": name,
                "top1": [self.token(i) for i in ids],
                "top1_id": ids,
                "correct": correct[name].ravel(),
                "agree_final": agree[name].ravel(),
                "entropy": self.entropy[name].ravel(),
                "entropy_vocab": self.entropy_vocab[name].ravel(),
                "n_tokens": np.repeat(self.n_tokens, layers),
                "n_choices": np.repeat(self.n_choices, layers),
            }))
        if not frames:
            return pd.DataFrame({column: [] for column in CSV_COLUMNS})
        return pd.concat(frames, ignore_index=True)[list(CSV_COLUMNS)]

    def to_csv(self, path: str | Path, inputs: Sequence[str | Path | None] = ()) -> tuple[Path, Path]:
        """Write the CSV and its metadata beside it (<name>.meta.json: what `exit-curve` reads for
        the cost model); returns both paths.

        Each file is written whole through a temporary file, and neither may be a folder, lie under
        a file, or be one of `inputs` (the dataset file, a calibration: InputError before writing).
        """
        path = check_output(path, inputs, what="the sweep CSV", create_folder=True)
        meta_path = check_output(path.with_suffix(".meta.json"), inputs, what="the sweep's metadata file",
                                 create_folder=True)
        meta = {"model": self.model_name, "fingerprint": self.fingerprint, "dataset": self.dataset_name,
                "dataset_hash": self.dataset_hash, "num_layers": self.num_layers, "examples": self.num_examples,
                "settings": self.settings, "linear_spade_source": self.linear_spade_source,
                "skipped": [list(s) for s in self.skipped], "cost": self.info.get("cost"),
                "timings_s": self.info.get("timings_s"), "from_cache": self.from_cache}
        with atomic_output(path) as tmp:  # each file is whole or untouched, never half written
            self.frame().to_csv(tmp, index=False)
        atomic_write_text(meta_path, json.dumps(meta, indent=1, ensure_ascii=False))
        return path, meta_path

    def linear_spade_scores(self) -> list[dict]:
        """Per layer, over all examples (each scored by a map not fitted on it): top-1 agreement of
        linear SPADE with SPADE over the vocabulary, and the correlation of their entropies."""
        if "linear_spade" not in self.top1:
            return []
        scores = []
        for layer in range(self.num_layers + 1):
            lin, spade = self.entropy_vocab["linear_spade"][:, layer], self.entropy_vocab["spade"][:, layer]
            corr = float(np.corrcoef(lin, spade)[0, 1]) if len(lin) > 1 and lin.std() > 0 and spade.std() > 0 \
                else float("nan")
            scores.append({
                "layer": layer,
                "agree_top1": float((self.top1_vocab["linear_spade"][:, layer]
                                     == self.top1_vocab["spade"][:, layer]).mean()),
                "entropy_corr": corr,
                "logit_lens_agree_top1": float((self.top1_vocab["logit_lens"][:, layer]
                                                == self.top1_vocab["spade"][:, layer]).mean()),
            })
        return scores

    def format_table(self) -> str:
        """Accuracy (top-1 = gold) per layer and decoder, and linear SPADE's agreement with SPADE."""
        names = self.decoders
        head = f"{'layer':>5}  " + "  ".join(f"{name:>12}" for name in names)
        lin = {row["layer"]: row for row in self.linear_spade_scores()}
        if lin:
            head += f"  {'lin=SPADE':>9}  {'corr(H)':>7}"
        lines = ["accuracy (top-1 = gold token)" + (" among the choices" if self.has_choices.any() else ""), head]
        for layer in range(self.num_layers + 1):
            line = f"{layer:>5}  " + "  ".join(f"{self.accuracy(name)[layer]:12.2f}" for name in names)
            if lin:
                line += f"  {lin[layer]['agree_top1']:9.2f}  {lin[layer]['entropy_corr']:7.2f}"
            lines.append(line)
        return "\n".join(lines)

    def summary(self) -> pd.DataFrame:
        """Per (decoder, layer): accuracy, agreement with the final answer, mean entropy."""
        rows = []
        for name in self.decoders:
            acc, agree = self.accuracy(name), self.agreement(name)
            ent = self.entropy[name].mean(0) if self.num_examples else np.zeros(self.num_layers + 1)
            for layer in range(self.num_layers + 1):
                rows.append({"decoder": name, "layer": layer, "accuracy": float(acc[layer]),
                             "agree_final": float(agree[layer]), "mean_entropy": float(ent[layer])})
        return pd.DataFrame(rows)
