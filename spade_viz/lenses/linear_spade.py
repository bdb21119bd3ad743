"""Linear SPADE: per-layer affine maps A_l h_l[T] + b_l that imitate SPADE's output at layer l.

The map reads the raw residual at the answer row and outputs an approximation of SPADE's
final-normed state there, decoded by the unembedding alone (`AffineLens` kind "linear_spade").
Its entropy is the cheap confidence of the hybrid early exit (docs/method.md).

Fitting: closed-form ridge per layer (`fit_maps`), on rows (h_l[T], SPADE_l[T]) of a
training set. Why closed form rather than gradient training: the least-squares objective
is convex, so one linear solve per layer (d x d, d = 576 on the default model: milliseconds)
gives its exact optimum, deterministically, with no learning rate, schedule or epochs to tune;
all the cost is in producing the SPADE targets, which any method needs.

What to fit on. Measured on the default model (SmolLM2-135M), held-out top-1 agreement with
SPADE at the answer position: maps fitted on the answer rows of the same task reach 0.5-0.99
across layers (the logit lens: 0.00-0.2), while maps fitted on other tasks or on every position
of generic text transfer poorly (often below 0.1). So a map is fitted per task:

- `fit_linear_spade(lm, dataset)`: a separate training split of a dataset (the rest is
  held out and scored), saved with metadata naming the model, its weight hash, the layers,
  the SPADE position mode, and the training set (hash and one short hash per training prompt,
  so that a sweep can tell which of its examples a saved map was fitted on);
- `crossfit_states(...)`: k-fold cross-fitting on a dataset's own answer rows, used by the sweep
  when no saved map fits: each example is scored by a map fitted on the other folds only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..engine import prepare_examples
from ..errors import InputError, check_int, check_number
from ..files import check_output
from ..limits import DEFAULT_TOKEN_LIMIT
from ..models.loading import LoadedModel, operation
from ..progress import Progress
from .affine import AffineLens, LensMismatch, default_lens_path, lens_meta
from .spade import answer_rows
from .stats import entropy_top1

KIND = "linear_spade"
DEFAULT_RIDGE = 1e-2
DEFAULT_HELDOUT = 0.25



def prompt_hash(prompt: str) -> str:
    """Short hash of a prompt's text: what saved maps list to mark the prompts they were fitted on."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def training_set_hash(examples: Sequence) -> str:
    """Hash of the examples a map was fitted on (id, prompt, answer), kept in its metadata."""
    payload = json.dumps([[e.id, e.prompt, e.answer] for e in examples], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def fold_ids(example_ids: Sequence[str], folds: int) -> np.ndarray:
    """A fold 0..k-1 per example, balanced and stable: by a hash-ordered rank of its id."""
    order = sorted(range(len(example_ids)),
                   key=lambda i: hashlib.sha256(str(example_ids[i]).encode()).hexdigest())
    out = np.empty(len(example_ids), dtype=np.int64)
    out[order] = np.arange(len(example_ids)) % max(1, folds)
    return out


# --------------------------------------------------------------------------------------------
# Fitting and applying
# --------------------------------------------------------------------------------------------


def _centred(inputs: torch.Tensor, targets: torch.Tensor, ridge: float):
    """Per layer: centred inputs [L, n, d] and targets [L, n, d'], their means, and the ridge penalty
    [L, 1, 1] scaled by the input variance (one value suits layers whose norms differ by orders of
    magnitude). Centring keeps the bias out of the penalty."""
    x = inputs.double().transpose(0, 1)
    y = targets.double().transpose(0, 1)
    x_mean, y_mean = x.mean(1, keepdim=True), y.mean(1, keepdim=True)
    xc = x - x_mean
    penalty = (ridge * (xc.pow(2).sum((1, 2)) / xc.shape[2]).clamp_min(1e-12))[:, None, None]
    return xc, y - y_mean, x_mean, y_mean, penalty


def _dual(xc: torch.Tensor, yc: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """(XX' + cI)^-1 Y per layer, [L, n, d']: the ridge solution is X' times it."""
    eye = torch.eye(xc.shape[1], dtype=xc.dtype, device=xc.device)
    return torch.linalg.solve(xc @ xc.transpose(1, 2) + penalty * eye, yc)


def fit_maps(inputs: torch.Tensor, targets: torch.Tensor, ridge: float = DEFAULT_RIDGE):
    """Per-layer ridge: inputs [n, L, d], targets [n, L, d'] -> weight [L, d', d], bias [L, d'].

    Solved for all layers in one batched call, in its dual form (an n x n system) when there are
    fewer rows than input dimensions: identical optimum, (X'X + cI)^-1 X' = X'(XX' + cI)^-1, at a
    fraction of the cost when cross-fitting small sets.
    """
    xc, yc, x_mean, y_mean, penalty = _centred(inputs, targets, ridge)
    rows, dim = xc.shape[1], xc.shape[2]
    if rows <= dim:
        weight = torch.einsum("lni,lno->loi", xc, _dual(xc, yc, penalty))
    else:
        eye = torch.eye(dim, dtype=xc.dtype, device=xc.device)
        weight = torch.linalg.solve(xc.transpose(1, 2) @ xc + penalty * eye, xc.transpose(1, 2) @ yc)
        weight = weight.transpose(1, 2)  # [L, d', d]
    bias = y_mean[:, 0] - torch.einsum("loi,li->lo", weight, x_mean[:, 0])
    return weight.float(), bias.float()


def apply_maps(weight: torch.Tensor, bias: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Inputs [n, L, d] -> [n, L, d'] (each layer through its own map)."""
    weight = weight.to(inputs.device, inputs.dtype)
    bias = bias.to(inputs.device, inputs.dtype)
    return torch.einsum("loi,nli->nlo", weight, inputs) + bias


def _ridge_predict(inputs: torch.Tensor, targets: torch.Tensor, queries: torch.Tensor, ridge: float) -> torch.Tensor:
    """What `apply_maps(*fit_maps(inputs, targets, ridge), queries)` gives, [m, L, d'], without
    forming the [L, d', d] maps when the dual form applies (fewer rows than input dimensions)."""
    if inputs.shape[0] > inputs.shape[2]:
        return apply_maps(*fit_maps(inputs, targets, ridge), queries)
    xc, yc, x_mean, y_mean, penalty = _centred(inputs, targets, ridge)
    q = queries.double().transpose(0, 1) - x_mean  # [L, m, d]
    return ((q @ xc.transpose(1, 2)) @ _dual(xc, yc, penalty) + y_mean).transpose(0, 1).float()


def crossfit_states(inputs: torch.Tensor, targets: torch.Tensor, folds: np.ndarray,
                    ridge: float = DEFAULT_RIDGE) -> torch.Tensor:
    """Linear-SPADE states [n, L, d'] where row i comes from maps fitted on the other folds only."""
    out = torch.empty(targets.shape, dtype=targets.dtype, device=targets.device)
    folds = torch.as_tensor(folds)
    for fold in folds.unique().tolist():
        test = folds == fold
        out[test] = _ridge_predict(inputs[~test], targets[~test], inputs[test], ridge).to(out.dtype)
    return out


# --------------------------------------------------------------------------------------------
# Held-out scores
# --------------------------------------------------------------------------------------------


def heldout_scores(lm: LoadedModel, predicted: torch.Tensor, targets: torch.Tensor,
                   residuals: torch.Tensor | None = None) -> list[dict]:
    """Per layer: top-1 agreement of linear SPADE with SPADE, Pearson correlation of their
    entropies, mean absolute entropy gap, and (given residuals) the logit lens's agreement with SPADE.

    predicted, targets [n, L, d'] final-normed states; residuals [n, L, d] raw.
    """
    scores = []
    with torch.no_grad():
        for layer in range(targets.shape[1]):
            h_lin, top_lin = entropy_top1(lm.adapter.head(predicted[:, layer].to(lm.device, lm.dtype)))
            h_spade, top_spade = entropy_top1(lm.adapter.head(targets[:, layer].to(lm.device, lm.dtype)))
            row = {
                "layer": layer,
                "agree_top1": float((top_lin == top_spade).float().mean()),
                "entropy_corr": _pearson(h_lin, h_spade),
                "entropy_mae": float((h_lin - h_spade).abs().mean()),
            }
            if residuals is not None:
                top_lens = lm.adapter.logit_lens(residuals[:, layer].to(lm.device, lm.dtype)).argmax(-1)
                row["logit_lens_agree_top1"] = float((top_lens == top_spade).float().mean())
            scores.append(row)
    return scores


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    denom = float(a.norm() * b.norm())
    return float((a * b).sum()) / denom if denom > 0 else float("nan")


def format_scores(scores: list[dict]) -> str:
    """`heldout_scores` as a text table, one line per layer."""
    lines = [f"{'layer':>5}  {'agree(lin,SPADE)':>16}  {'agree(lens,SPADE)':>17}  {'corr(H)':>7}  {'|dH|':>5}"]
    for row in scores:
        lens = row.get("logit_lens_agree_top1")
        lens_text = f"{lens:17.2f}" if lens is not None else f"{'-':>17}"
        lines.append(f"{row['layer']:>5}  {row['agree_top1']:16.2f}  {lens_text}  "
                     f"{row['entropy_corr']:7.2f}  {row['entropy_mae']:5.2f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Fitting on a dataset (separate training split + held-out split)
# --------------------------------------------------------------------------------------------


@dataclass
class LinearSpadeFit:
    """A fitted linear-SPADE map with its held-out scores, split sizes and where it was saved."""

    lens: AffineLens
    scores: list[dict]  # held-out, per layer (see heldout_scores)
    n_train: int
    n_heldout: int
    path: Path | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def describe(self) -> str:
        """One line for the CLI: which model, how it was fitted, on how many examples."""
        meta = self.lens.meta
        return (f"linear SPADE for '{meta.get('model')}' ({meta.get('fingerprint')}): closed-form ridge "
                f"(ridge={meta.get('ridge')}) per layer on {self.n_train} training examples of "
                f"'{meta.get('training_set')}', scored on {self.n_heldout} held-out examples")


def split_examples(examples: Sequence, heldout: float, seed: int = 0):
    """Deterministic training / held-out split of examples (by a seeded hash of their ids)."""
    if not 0 < heldout < 1:
        raise InputError("the held-out share must be between 0 and 1 (e.g. 0.25)")
    ranked = sorted(examples, key=lambda e: hashlib.sha256(f"{seed}:{e.id}".encode()).hexdigest())
    n_held = max(1, int(round(len(ranked) * heldout)))
    if n_held >= len(ranked):
        raise InputError(f"a held-out share of {heldout:g} holds out all {len(ranked)} examples, leaving none to fit "
                         "on: choose a smaller share")
    held = {e.id for e in ranked[:n_held]}
    return [e for e in examples if e.id not in held], [e for e in examples if e.id in held]


@operation
def fit_linear_spade(
    lm: LoadedModel,
    dataset,
    heldout: float = DEFAULT_HELDOUT,
    ridge: float = DEFAULT_RIDGE,
    spade_positions: str = "original",
    seed: int = 0,
    batch_size: int = 16,
    max_tokens: int = DEFAULT_TOKEN_LIMIT,
    out: str | Path | None = None,
    save: bool = True,
    progress: Progress | None = None,
) -> LinearSpadeFit:
    """Fit linear SPADE on a training split of `dataset`, score it on the held-out rest, save it.

    Rows are the answer positions of the training examples (what the sweep and the early exit
    decode); targets are SPADE's final-normed states there, at every layer 0..L-1.
    """
    if not hasattr(dataset, "examples") or not hasattr(dataset, "name"):
        hint = f": load it first, e.g. load_builtin({dataset!r})" if isinstance(dataset, str) else ""
        raise InputError(f"fitting linear SPADE needs a Dataset (load_builtin, load_dataset), not "
                         f"{type(dataset).__name__}{hint}")
    if save and out is not None:  # a folder or a path under a file: refused before the work, not after
        check_output(out, what="the linear-SPADE file", create_folder=True)
    check_number("the ridge", ridge, 0, low_open=True)
    check_int("the batch size", batch_size, 1)
    max_tokens = check_int("max_tokens", max_tokens, 2)
    prepared, skipped = prepare_examples(lm, dataset.examples, max_tokens)
    usable = {p.id for p in prepared}
    examples = [e for e in dataset.examples if e.id in usable]
    if len(examples) < 4:
        raise InputError(f"'{dataset.name}' has {len(examples)} usable examples; fitting needs at least 4")
    train, held = split_examples(examples, heldout, seed)
    by_id = {p.id: p for p in prepared}
    rows = answer_rows(lm, [by_id[e.id] for e in examples], spade_positions, batch_size, progress)
    index = {e.id: i for i, e in enumerate(examples)}
    train_rows = torch.tensor([index[e.id] for e in train])
    held_rows = torch.tensor([index[e.id] for e in held])
    if progress:
        progress(0, 1, "fitting linear SPADE")
    weight, bias = fit_maps(rows.residuals[train_rows], rows.spade[train_rows], ridge)
    predicted = apply_maps(weight, bias, rows.residuals[held_rows])
    scores = heldout_scores(lm, predicted, rows.spade[held_rows], rows.residuals[held_rows])
    if progress:
        progress(1, 1, "fitting linear SPADE")
    meta = lens_meta(
        lm,
        weight_hash=lm.fingerprint(),
        layers=list(range(lm.num_layers)),
        spade_positions=spade_positions,
        target="SPADE final-normed state at the answer row (decoded by the unembedding alone)",
        fit="closed-form ridge per layer (inputs centred, penalty scaled by the input variance)",
        ridge=str(ridge),
        split=f"separate training split: {len(train)} examples fitted, {len(held)} held out (seed {seed})",
        training_set=dataset.name,
        training_set_hash=training_set_hash(train),
        dataset_hash=dataset.source_hash,
        training_prompts=sorted({prompt_hash(e.prompt) for e in train}),
        heldout=scores,
        n_train=str(len(train)),
        n_heldout=str(len(held)),
    )
    lens = AffineLens(KIND, weight, bias, meta)
    fitted = LinearSpadeFit(lens, scores, len(train), len(held), skipped=list(skipped))
    if save:
        fitted.path = lens.save(Path(out) if out else default_lens_path(lm, KIND))
    return fitted


# --------------------------------------------------------------------------------------------
# Saved maps: loading and deciding whether a sweep may use one
# --------------------------------------------------------------------------------------------


def load_linear_spade(lm: LoadedModel, path: str | Path | None = None) -> AffineLens | None:
    """The saved linear-SPADE map for this model (default path, or `path`); None when there is none.

    A map fitted on another model is refused with `LensMismatch` (a one-line message).
    """
    path = Path(path) if path else default_lens_path(lm, KIND)
    if not path.exists():
        if path != default_lens_path(lm, KIND):
            raise LensMismatch(f"no such linear-SPADE file: {path}")
        return None
    lens = AffineLens.load(path, lm)
    if lens.kind != KIND:
        raise LensMismatch(f"{path.name} holds a {lens.kind.replace('_', ' ')}, not linear SPADE")
    return lens


def lens_digest(lens: AffineLens) -> str:
    """Content hash of a lens (weights and metadata): part of a sweep's cache key."""
    digest = hashlib.sha256()
    digest.update(lens.kind.encode())
    digest.update(json.dumps(lens.meta, sort_keys=True).encode())
    digest.update(lens.weight.float().contiguous().numpy().tobytes())
    digest.update(lens.bias.float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def training_prompts(lens: AffineLens) -> set[str]:
    """`prompt_hash`es of the prompts a map was fitted on (empty when its metadata has none)."""
    try:
        return set(json.loads(lens.meta.get("training_prompts", "[]")))
    except ValueError:
        return set()


def usable_for(lens: AffineLens, examples: Sequence, spade_positions: str) -> tuple[bool, str]:
    """Whether a saved map may score these examples: same SPADE position mode and fitted on none of them."""
    mode = lens.meta.get("spade_positions", "original")
    if mode != spade_positions:
        return False, f"it imitates SPADE with '{mode}' positions, this sweep uses '{spade_positions}'"
    seen = training_prompts(lens)
    overlap = sum(prompt_hash(e.prompt) in seen for e in examples)
    if overlap:
        return False, f"it was fitted on {overlap} of these prompts"
    return True, ""
