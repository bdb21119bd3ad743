"""Dataset sweep: every example x every layer 0..L x every decoder, in batches.

For each example the model sees `<s>` + the tokens of the prompt, split where the gold answer
starts (`spade_viz.data.answer_split`); the answer position T is the last of them. Per batch:

- one right-padded forward with an attention mask (exact for every real token under causal
  attention) gives h_l[T] for l = 0..L at each example's own T;
- logit lens: final norm + unembedding of h_l[T] (layer L: the model's own output);
- SPADE: every (example, layer) row of the batch continued through the blocks above its layer
  (`continue_rows_in_bands`);
- linear SPADE: a per-layer affine map of h_l[T] (see `lenses.linear_spade`), then unembedding;
- tuned lens, when one is saved for this model.

Each decoder at each (example, layer) gives a top-1 token, whether it is the gold token and the
full model's answer, and an entropy. When a row has `choices`, top-1 is the best choice and
`entropy` is over the choices (`entropy_vocab` always covers the whole vocabulary).
Results are cached on disk (npz + json, never pickle) keyed by model fingerprint, dataset
content, settings and the hashes of the lenses used.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .errors import InputError
from .lenses.affine import AffineLens, find_lens
from .lenses.spade import POSITION_MODES, continue_rows_in_bands, spade_position
from .models.loading import LoadedModel, cache_dir

SWEEP_FORMAT = "spade-viz-sweep-2"  # 2: n_choices per example
DECODERS = ("logit_lens", "spade", "linear_spade", "tuned_lens")  # the order of columns and rows
CSV_COLUMNS = (
    "example_id", "layer", "decoder", "top1", "top1_id", "correct", "agree_final",
    "entropy", "entropy_vocab", "n_tokens", "n_choices",
)
_STATS_CHUNK = 128  # rows decoded against the vocabulary at once (128 x V floats: < 32 MB, so the
# allocator reuses the memory instead of mapping fresh pages each time)
_SPADE_CHUNK = 1024  # SPADE rows continued in one model call

Progress = Callable[[int, int, str], None]  # progress(done, total, stage)


# --------------------------------------------------------------------------------------------
# Settings and results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepSettings:
    """What changes the numbers (all of it goes into the cache key) and how work is batched."""

    batch_size: int = 16  # examples per forward pass (batching does not change results)
    spade_positions: str = "original"  # position id of the <a> row: "original" (T) or "renumbered"
    linear_spade: str = "auto"  # auto | saved | crossfit | off (see `plan_linear_spade`)
    folds: int = 5  # k of the k-fold cross-fitting of linear SPADE
    ridge: float = 1e-2  # ridge of the cross-fitted maps (a saved map keeps its own)
    tuned_lens: bool = True  # add the tuned lens when one is saved for this model
    max_tokens: int = 512

    def __post_init__(self):
        if self.spade_positions not in POSITION_MODES:
            raise InputError(f"spade_positions must be one of {', '.join(POSITION_MODES)}")
        if self.linear_spade not in ("auto", "saved", "crossfit", "off"):
            raise InputError("linear_spade must be one of auto, saved, crossfit, off")
        if self.batch_size < 1:
            raise InputError("the batch size must be at least 1")
        if self.folds < 2:
            raise InputError("cross-fitting needs at least 2 folds")
        if not self.ridge > 0:
            raise InputError("the ridge must be positive")

    def key(self) -> dict:
        """The settings that change results (batch size does not)."""
        data = asdict(self)
        data.pop("batch_size")
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
        return [name for name in DECODERS if name in self.top1]

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

    def to_csv(self, path: str | Path) -> tuple[Path, Path]:
        """Write the CSV and its metadata beside it (<name>.meta.json: what `exit-curve` reads for
        the cost model); returns both paths."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.frame().to_csv(path, index=False)
        meta_path = path.with_suffix(".meta.json")
        meta = {"model": self.model_name, "fingerprint": self.fingerprint, "dataset": self.dataset_name,
                "dataset_hash": self.dataset_hash, "num_layers": self.num_layers, "examples": self.num_examples,
                "settings": self.settings, "linear_spade_source": self.linear_spade_source,
                "skipped": [list(s) for s in self.skipped], "cost": self.info.get("cost"),
                "timings_s": self.info.get("timings_s"), "from_cache": self.from_cache}
        meta_path.write_text(json.dumps(meta, indent=1, ensure_ascii=False))
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


# --------------------------------------------------------------------------------------------
# Examples -> token ids
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedExample:
    index: int  # position in the dataset
    id: str
    token_ids: tuple[int, ...]  # <s> + context tokens; the answer position is the last
    gold_id: int
    choice_ids: tuple[int, ...] | None

    @property
    def answer_position(self) -> int:
        return len(self.token_ids) - 1


def prepare_examples(lm: LoadedModel, examples: Sequence, max_tokens: int = 512):
    """Token ids, gold and choice tokens of each example; (prepared, skipped [(id, reason)])."""
    from .data import answer_split, choice_token_ids

    limit = min(max_tokens, lm.max_positions or max_tokens)
    prepared, skipped = [], []
    for index, example in enumerate(examples):
        try:
            split = answer_split(lm.tokenizer, example.prompt, example.answer)
            choices = None
            if example.choices:
                choices = tuple(choice_token_ids(lm.tokenizer, example.prompt, example.choices))
                if split.gold_id not in choices:
                    raise ValueError("the answer's first token is not among the choices' first tokens")
        except ValueError as err:
            skipped.append((example.id, str(err)))
            continue
        ids = (lm.bos_id, *split.context_ids)
        if len(ids) > limit:
            skipped.append((example.id, f"{len(ids)} tokens with <s>; the limit is {limit}"))
            continue
        prepared.append(PreparedExample(index, example.id, ids, split.gold_id, choices))
    return prepared, skipped


# --------------------------------------------------------------------------------------------
# Model passes
# --------------------------------------------------------------------------------------------


def hidden_at(lm: LoadedModel, sequences: Sequence[Sequence[int]], picks: Sequence[Sequence[int]]):
    """One right-padded forward over `sequences`; hidden states at positions `picks[b]` of each.

    Returns (residuals [n, L, d]: raw h_0..h_{L-1}; final [n, d']: the final-normed h_L), rows
    in the order of the picks. Right padding with a mask leaves every real token's states as in
    an unpadded run (causal attention never looks right).
    """
    width = max(len(seq) for seq in sequences)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else lm.bos_id
    ids = torch.full((len(sequences), width), int(pad), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.as_tensor(seq)
        mask[row, : len(seq)] = 1
    rows = torch.tensor([b for b, chosen in enumerate(picks) for _ in chosen], device=lm.device)
    cols = torch.tensor([p for chosen in picks for p in chosen], device=lm.device)
    # Hooks keep only the picked rows of the first block's input (h_0) and of every block's output
    # (h_1..h_L before the final norm), not every position of every layer (`output_hidden_states`).
    caller = threading.get_ident()
    taken: list[torch.Tensor] = []

    def take_input(_module, args, kwargs):
        if threading.get_ident() == caller:
            taken.append((args[0] if args else kwargs["hidden_states"])[rows, cols])

    def take_output(_module, _inputs, output):
        if threading.get_ident() == caller:
            taken.append((output[0] if isinstance(output, tuple) else output)[rows, cols])

    blocks = lm.adapter.blocks
    handles = [blocks[0].register_forward_pre_hook(take_input, with_kwargs=True)]
    handles += [block.register_forward_hook(take_output) for block in blocks]
    try:
        with torch.no_grad():
            lm.model.base_model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device), use_cache=False)
            residuals = torch.stack(taken[:-1], dim=1)
            final = lm.adapter.finalize(taken[-1])
    finally:
        for handle in handles:
            handle.remove()
    return residuals, final


def spade_rows(
    lm: LoadedModel,
    residuals: torch.Tensor,
    layers: torch.Tensor,
    token_ids: torch.Tensor,
    answer_positions: torch.Tensor,
    mode: str = "original",
    chunk: int = _SPADE_CHUNK,
    groups: int = 5,
) -> torch.Tensor:
    """SPADE final-normed states [n, d'] of rows (h_l[T] [n, d], l [n], x_T [n], T [n]).

    Rows are grouped by start layer into about `groups` bands (`continue_rows_in_bands`).
    """
    if mode not in POSITION_MODES:
        raise InputError(f"spade_positions must be one of {', '.join(POSITION_MODES)}")
    if mode == "original":
        positions = answer_positions
    else:
        positions = torch.full_like(answer_positions, spade_position(0, mode, True))
    return continue_rows_in_bands(lm, residuals, layers, token_ids, positions, bands=groups, chunk=chunk)


# --------------------------------------------------------------------------------------------
# Decoding statistics
# --------------------------------------------------------------------------------------------


def _choice_matrix(choices: Sequence[tuple[int, ...] | None]) -> torch.Tensor:
    """[n, C] choice ids, -1 where a row has fewer (or none)."""
    width = max((len(c) for c in choices if c), default=0)
    matrix = torch.full((len(choices), max(width, 1)), -1, dtype=torch.long)
    for row, chosen in enumerate(choices):
        if chosen:
            matrix[row, : len(chosen)] = torch.as_tensor(chosen)
    return matrix


def logit_stats(logits: torch.Tensor, choices: torch.Tensor) -> dict[str, torch.Tensor]:
    """top1/entropy over the vocabulary and, for rows with choices (ids >= 0), over the choices.

    logits [n, V] (float32 logits are shifted in place: pass a temporary); choices [n, C] with -1
    padding. Returns top1, entropy (restricted where a row has choices), top1_vocab,
    entropy_vocab, each [n]. Few full-width passes and no extra [n, V] allocation but one:
    on CPUs these element-wise passes cost more than the unembedding product itself.
    """
    z = logits.float()
    top1_vocab = z.argmax(-1)
    z.sub_(z.amax(-1, keepdim=True))  # max 0 per row: exp cannot overflow
    e = torch.exp(z)
    total = e.sum(-1)
    entropy_vocab = torch.log(total) - e.mul_(z).sum(-1) / total  # log S - sum(e z) / S
    valid = choices >= 0
    restricted = valid.any(-1).to(z.device)
    top1, entropy = top1_vocab.clone(), entropy_vocab.clone()
    if restricted.any():
        valid = valid.to(z.device)
        ids = choices.clamp_min(0).to(z.device)
        picked = z.gather(1, ids).masked_fill(~valid, float("-inf"))
        c_lse = torch.logsumexp(picked, -1, keepdim=True)
        c_probs = torch.exp(picked - c_lse)
        c_entropy = c_lse[:, 0] - torch.where(valid, c_probs * picked, torch.zeros_like(picked)).sum(-1)
        c_top1 = ids.gather(1, picked.argmax(-1, keepdim=True))[:, 0]
        top1 = torch.where(restricted, c_top1, top1)
        entropy = torch.where(restricted, c_entropy, entropy)
    return {"top1": top1, "entropy": entropy, "top1_vocab": top1_vocab, "entropy_vocab": entropy_vocab}


def _decode_rows(logits_of: Callable[[slice], torch.Tensor], n: int, choices: torch.Tensor):
    """Stats of n rows whose logits `logits_of(rows)` gives chunk by chunk; numpy arrays [n]."""
    parts = []
    for start in range(0, n, _STATS_CHUNK):
        rows = slice(start, min(start + _STATS_CHUNK, n))
        parts.append(logit_stats(logits_of(rows), choices[rows]))
    return {key: torch.cat([p[key] for p in parts]).cpu().numpy() for key in parts[0]}


# --------------------------------------------------------------------------------------------
# Answer rows: residuals, final states and SPADE states at each example's answer position
# --------------------------------------------------------------------------------------------


@dataclass
class AnswerRows:
    residuals: torch.Tensor  # [N, L, d] raw h_0..h_{L-1} at T
    final: torch.Tensor  # [N, d'] final-normed h_L at T (the model's own output)
    spade: torch.Tensor  # [N, L, d'] SPADE final-normed states for layers 0..L-1


def _batches(prepared: Sequence[PreparedExample], batch_size: int, max_tokens: int = 4096):
    """Index lists of examples of similar length (less padding), at most batch_size and ~max_tokens each."""
    order = sorted(range(len(prepared)), key=lambda i: (len(prepared[i].token_ids), i))
    batch: list[int] = []
    for i in order:
        width = len(prepared[i].token_ids)
        if batch and (len(batch) >= batch_size or (len(batch) + 1) * width > max_tokens):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def _batch_rows(lm: LoadedModel, batch: Sequence[PreparedExample], mode: str):
    """(residuals [B, L, d], final [B, d'], spade [B, L, d']) at the answer rows of one batch."""
    layers = lm.num_layers
    residuals, final = hidden_at(lm, [p.token_ids for p in batch], [[p.answer_position] for p in batch])
    n = len(batch)
    states = spade_rows(
        lm,
        residuals.reshape(n * layers, -1),
        torch.arange(layers).repeat(n),
        torch.tensor([p.token_ids[-1] for p in batch]).repeat_interleave(layers),
        torch.tensor([p.answer_position for p in batch]).repeat_interleave(layers),
        mode,
    )
    return residuals, final, states.view(n, layers, -1)


def answer_rows(lm: LoadedModel, prepared: Sequence[PreparedExample], mode: str = "original",
                batch_size: int = 16, progress: Callable[[int, int, str], None] | None = None) -> AnswerRows:
    """Residuals, final states and SPADE states at the answer rows of `prepared`, in its order."""
    n, done = len(prepared), 0
    parts: dict[int, tuple] = {}
    if progress:
        progress(0, n, "SPADE at the answer rows")
    for batch in _batches(prepared, batch_size):
        res, fin, spade = _batch_rows(lm, [prepared[i] for i in batch], mode)
        for j, i in enumerate(batch):
            parts[i] = (res[j], fin[j], spade[j])
        done += len(batch)
        if progress:
            progress(done, n, "SPADE at the answer rows")
    return AnswerRows(*(torch.stack([parts[i][k] for i in range(n)]) for k in range(3)))


# --------------------------------------------------------------------------------------------
# Linear SPADE: which map scores which example
# --------------------------------------------------------------------------------------------


@dataclass
class LinearPlan:
    mode: str  # "saved", "crossfit" or "off"
    source: str  # one line for the outputs: how the map was fitted, never on the example it scores
    lens: AffineLens | None = None
    folds: int = 0

    def key(self) -> dict:
        from .lenses.linear_spade import lens_digest

        return {"mode": self.mode, "lens": lens_digest(self.lens) if self.lens is not None else None,
                "folds": self.folds}


def plan_linear_spade(lm: LoadedModel, examples: Sequence, dataset_name: str, settings: SweepSettings,
                      calibration: AffineLens | str | Path | None = None) -> LinearPlan:
    """A saved map that matches the model and was fitted on none of these examples (auto, saved);
    otherwise k-fold cross-fitting on the dataset itself (auto, crossfit); or nothing (off)."""
    from .lenses.linear_spade import load_linear_spade, usable_for

    choice = settings.linear_spade
    if choice == "off":
        return LinearPlan("off", "off")
    note = ""
    if choice in ("auto", "saved"):
        if isinstance(calibration, AffineLens):
            calibration.check_matches(lm)
            lens = calibration
        else:
            lens = load_linear_spade(lm, calibration)
        if lens is not None:
            ok, why = usable_for(lens, examples, settings.spade_positions)
            if ok:
                meta = lens.meta
                trained_on = meta.get("training_set", "?")
                source = (f"separate calibration set: maps fitted on {meta.get('n_train', '?')} examples of "
                          f"'{trained_on}' (training-set hash {meta.get('training_set_hash', '?')[:12]}), "
                          "none of them in this dataset")
                if trained_on != dataset_name:
                    source += ("; note: calibrated on another task, and linear SPADE transfers poorly across "
                               "tasks (--linear-spade crossfit fits on this one)")
                return LinearPlan("saved", source, lens)
            if choice == "saved":
                raise InputError(f"the saved linear-SPADE calibration cannot score this dataset: {why}")
            note = f"; the saved calibration was not used: {why}"
        elif choice == "saved":
            raise InputError("no saved linear-SPADE calibration for this model: run `python -m spade_viz calibrate` "
                             "first, or use --linear-spade crossfit")
    if len(examples) < 2:
        return LinearPlan("off", "none: cross-fitting needs at least 2 examples" + note)
    folds = min(settings.folds, len(examples))
    source = (f"{folds}-fold cross-fitting on this dataset: each example is scored by maps fitted (closed-form "
              f"ridge {settings.ridge:g}) on the other {folds - 1} folds only{note}")
    return LinearPlan("crossfit", source, folds=folds)


# --------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------


def _readout(lm: LoadedModel, kind: str):
    return lm.adapter.logit_lens if kind == "lens" else lm.adapter.head


def _grid_stats(lm: LoadedModel, states: torch.Tensor, readout: str, final_stats: dict, choices: torch.Tensor):
    """Stats of states [B, L, d] read by `readout`, with the model's own output as layer L: [B, L+1] each."""
    n, layers = states.shape[:2]
    flat = states.reshape(n * layers, -1)
    rows = choices.repeat_interleave(layers, 0)
    read = _readout(lm, readout)
    with torch.no_grad():
        stats = _decode_rows(lambda part: read(flat[part]), n * layers, rows)
    return {key: np.concatenate([value.reshape(n, layers), final_stats[key][:, None]], 1)
            for key, value in stats.items()}


def _cost_info(lm: LoadedModel) -> dict | None:
    try:
        from .exit.cost import CostModel

        return CostModel.from_lm(lm).to_dict()
    except Exception:  # cost accounting is optional here; the exit page can count from the config
        return None


def run_sweep(
    lm: LoadedModel,
    dataset,
    settings: SweepSettings | None = None,
    *,
    use_cache: bool = True,
    calibration: AffineLens | str | Path | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> SweepResult:
    """Every usable example of `dataset` x layers 0..L x decoders; cached on disk (see module doc).

    `calibration`: a linear-SPADE map (or its file) to use instead of the saved default.
    `progress(done, total, stage)` is called as batches finish.
    """
    settings = settings or SweepSettings()
    prepared, skipped = prepare_examples(lm, dataset.examples, settings.max_tokens)
    if not prepared:
        reason = f" (first: {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise InputError(f"no usable example in '{dataset.name}'{reason}")
    plan, tuned, key = _lenses_and_key(lm, dataset, prepared, settings, calibration)
    if use_cache:
        cached = _load_for(key, dataset, plan)
        if cached is not None:
            return cached

    started = time.perf_counter()
    n, layers = len(prepared), lm.num_layers
    choices_all = _choice_matrix([p.choice_ids for p in prepared])
    names = ["logit_lens", "spade"] + (["linear_spade"] if plan.mode != "off" else []) \
        + (["tuned_lens"] if tuned is not None else [])
    fields = ("top1", "entropy", "top1_vocab", "entropy_vocab")
    out = {f: {name: np.zeros((n, layers + 1), dtype=np.int64 if "top1" in f else np.float32) for name in names}
           for f in fields}
    final_ids = np.zeros(n, dtype=np.int64)
    keep = plan.mode == "crossfit"
    kept_res = torch.empty(0)
    kept_spade = torch.empty(0)
    final_by_row: dict[int, dict] = {}
    timings = {"model": 0.0, "decode": 0.0}
    done = 0
    if progress:
        progress(0, n, "sweep")
    for batch in _batches(prepared, settings.batch_size):
        rows = torch.tensor(batch)
        tick = time.perf_counter()
        residuals, final, spade = _batch_rows(lm, [prepared[i] for i in batch], settings.spade_positions)
        timings["model"] += time.perf_counter() - tick
        tick = time.perf_counter()
        choices = choices_all[rows]
        with torch.no_grad():
            final_stats = {k: v.cpu().numpy() for k, v in logit_stats(lm.adapter.head(final), choices).items()}
        final_ids[batch] = final_stats["top1"]
        grids = {"logit_lens": (residuals, "lens"), "spade": (spade, "head")}
        if plan.mode == "saved":
            with torch.no_grad():
                grids["linear_spade"] = (plan.lens.apply(residuals.transpose(0, 1)).transpose(0, 1), "head")
        if tuned is not None:
            with torch.no_grad():
                grids["tuned_lens"] = (tuned.apply(residuals.transpose(0, 1)).transpose(0, 1), "lens")
        for name, (states, readout) in grids.items():
            stats = _grid_stats(lm, states, readout, final_stats, choices)
            for f in fields:
                out[f][name][batch] = stats[f]
        if keep:
            if not kept_res.numel():
                kept_res = torch.zeros(n, layers, residuals.shape[-1], dtype=torch.float32)
                kept_spade = torch.zeros(n, layers, spade.shape[-1], dtype=torch.float32)
            kept_res[rows] = residuals.float().cpu()
            kept_spade[rows] = spade.float().cpu()
            final_by_row.update({i: {k: v[j] for k, v in final_stats.items()} for j, i in enumerate(batch)})
        timings["decode"] += time.perf_counter() - tick
        done += len(batch)
        if progress:
            progress(done, n, "sweep")

    if keep:
        from .lenses.linear_spade import crossfit_states, fold_ids

        if progress:
            progress(0, 1, "cross-fitting linear SPADE")
        tick = time.perf_counter()
        folds = fold_ids([p.id for p in prepared], plan.folds)
        predicted = crossfit_states(kept_res, kept_spade, folds, settings.ridge)
        final_stats = {k: np.stack([final_by_row[i][k] for i in range(n)]) for k in fields}
        stats = _grid_stats(lm, predicted.to(lm.device, lm.dtype), "head", final_stats, choices_all)
        for f in fields:
            out[f]["linear_spade"][:] = stats[f]
        timings["linear_spade_crossfit"] = time.perf_counter() - tick
        if progress:
            progress(1, 1, "cross-fitting linear SPADE")

    ids = np.unique(np.concatenate([out["top1"][name].ravel() for name in names]
                                   + [out["top1_vocab"][name].ravel() for name in names]
                                   + [np.asarray([p.gold_id for p in prepared])]))
    timings["total"] = time.perf_counter() - started
    result = SweepResult(
        model_name=lm.name,
        fingerprint=lm.fingerprint(),
        dataset_name=dataset.name,
        dataset_hash=dataset.source_hash,
        num_layers=layers,
        settings=asdict(settings),
        example_ids=[p.id for p in prepared],
        n_tokens=np.asarray([len(p.token_ids) for p in prepared], dtype=np.int64),
        gold_ids=np.asarray([p.gold_id for p in prepared], dtype=np.int64),
        final_ids=final_ids,
        n_choices=np.asarray([len(p.choice_ids) if p.choice_ids else 0 for p in prepared], dtype=np.int64),
        top1=out["top1"],
        entropy=out["entropy"],
        entropy_vocab=out["entropy_vocab"],
        top1_vocab=out["top1_vocab"],
        vocab={int(i): lm.token_str(int(i)) for i in ids},
        skipped=[tuple(s) for s in skipped],
        linear_spade_source=plan.source,
        info={"timings_s": timings, "cost": _cost_info(lm), "linear_spade_mode": plan.mode,
              "tuned_lens": tuned is not None, "cache_key": key},
    )
    if use_cache:
        save_cached(key, result)
    return result


# --------------------------------------------------------------------------------------------
# Disk cache: <cache>/sweeps/<key>.npz (arrays) + <key>.json (everything else); never pickle
# --------------------------------------------------------------------------------------------

_MAX_CACHED = 64


def sweep_cache_dir() -> Path:
    return cache_dir() / "sweeps"


def _cache_key(lm: LoadedModel, dataset, settings: SweepSettings, plan: LinearPlan, tuned: AffineLens | None) -> str:
    from .lenses.linear_spade import lens_digest

    payload = {
        "format": SWEEP_FORMAT,
        "fingerprint": lm.fingerprint(),
        "dtype": str(lm.dtype),
        "device": lm.device.type,
        "dataset": dataset.source_hash,
        "settings": settings.key(),
        "linear_spade": plan.key(),
        "tuned_lens": lens_digest(tuned) if tuned is not None else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def save_cached(key: str, result: SweepResult) -> None:
    folder = sweep_cache_dir()
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
    try:
        np.savez(tmp_npz, **arrays)
        tmp_json.write_text(json.dumps(meta, ensure_ascii=False))
        tmp_npz.replace(folder / f"{key}.npz")
        tmp_json.replace(folder / f"{key}.json")  # the json marks a complete entry
    except OSError:
        return  # a cache that cannot be written only costs time
    entries = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[_MAX_CACHED:]:
        for path in (old, old.with_suffix(".npz")):
            path.unlink(missing_ok=True)


def load_cached(key: str) -> SweepResult | None:
    folder = sweep_cache_dir()
    meta_path, npz_path = folder / f"{key}.json", folder / f"{key}.npz"
    if not (meta_path.is_file() and npz_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != SWEEP_FORMAT:
            return None
        with np.load(npz_path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
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
    except (OSError, ValueError, KeyError, TypeError):
        return None
    meta_path.touch()  # most recently used
    return result


def cached_sweep(lm: LoadedModel, dataset, settings: SweepSettings | None = None,
                 calibration: AffineLens | str | Path | None = None) -> SweepResult | None:
    """The cached result `run_sweep` would return, or None; never runs the model."""
    settings = settings or SweepSettings()
    prepared, _ = prepare_examples(lm, dataset.examples, settings.max_tokens)
    if not prepared:
        return None
    plan, _tuned, key = _lenses_and_key(lm, dataset, prepared, settings, calibration)
    return _load_for(key, dataset, plan)


def _lenses_and_key(lm: LoadedModel, dataset, prepared, settings: SweepSettings, calibration):
    """(linear-SPADE plan, tuned lens or None, cache key) of a sweep over the `prepared` examples."""
    usable = [dataset.examples[p.index] for p in prepared]
    plan = plan_linear_spade(lm, usable, dataset.name, settings, calibration)
    tuned = find_lens(lm, "tuned_lens") if settings.tuned_lens else None
    return plan, tuned, _cache_key(lm, dataset, settings, plan, tuned)


def _load_for(key: str, dataset, plan: LinearPlan) -> SweepResult | None:
    """The cached sweep under `key`, named after this dataset and this plan's note (same maps; the
    note on a saved file may differ)."""
    result = load_cached(key)
    if result is not None:
        result.dataset_name = dataset.name
        result.linear_spade_source = plan.source
    return result
