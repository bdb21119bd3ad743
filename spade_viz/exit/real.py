"""Real hybrid early exit: the forward pass actually stops at the exit layer, then SPADE answers.

For each prompt the model runs its own forward (any architecture) with a checkpoint before the
block after each checkpoint layer l (`models.surgery.checkpoints`, scoped to this call only):
it reads h_l at the answer row, maps it with linear SPADE, and if the entropy of that
distribution is below the threshold it raises `StopForward` carrying h_l[T]; the remaining
blocks never run on the full sequence. SPADE then continues that one row through blocks
l+1..L (attending to the cached `<s>`), with blocks 1..l doing no work, so no block runs twice
and none runs for nothing. Never confident: the forward finishes and the model's own logits
answer.

`run_real_exit` times this against plain full forward passes on the same prompts, in the same
process, interleaved (alternating which goes first), and reports the measured wall-clock
speedup beside the simulated compute fraction of the exits it actually took.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..engine import continue_rows, prepare_examples, skip_is_exact
from ..errors import InputError, check_int, check_number
from ..lenses.affine import AffineLens
from ..lenses.spade import spade_position
from ..lenses.stats import entropy_top1
from ..models import surgery
from ..models.loading import LoadedModel, operation
from .cost import Checkpoints, CostModel, full_cost, hybrid_costs


class StopForward(Exception):
    """Raised inside the forward pass by a confident checkpoint: carries the layer and h_l[T]."""

    def __init__(self, layer: int, state: torch.Tensor, entropy: float):
        super().__init__(f"exit at layer {layer}")
        self.layer, self.state, self.entropy = layer, state, entropy


@dataclass
class PreparedPrompt:
    """Token ids (with `<s>`) the model reads, and the gold token that follows them."""

    example_id: str
    ids: list[int]
    gold_id: int | None = None
    candidates: list[int] | None = None  # restrict confidence and answer to these tokens


def prepare_prompts(lm: LoadedModel, examples, max_tokens: int = 512,
                    skipped: list | None = None) -> list[PreparedPrompt]:
    """`Example`s of a dataset -> model inputs, exactly as the sweep prepares them (split at the gold
    answer's first token; rows with choices answer among their choices' first tokens). Examples the
    sweep would skip are skipped here too (appended to `skipped` as (id, reason))."""
    prepared, dropped = prepare_examples(lm, examples, max_tokens)
    if skipped is not None:
        skipped.extend(dropped)
    return [PreparedPrompt(p.id, list(p.token_ids), p.gold_id, list(p.choice_ids) if p.choice_ids else None)
            for p in prepared]


def _checks(lm: LoadedModel, lens: AffineLens, mask: np.ndarray, threshold: float,
            candidates: torch.Tensor | None = None) -> dict:
    """Per checkpoint layer l, a check of h_l (the input of block l) that raises StopForward when
    linear SPADE's entropy there is below the threshold."""
    def make(layer):
        layer_id = torch.tensor([layer])

        def check(hidden):
            state = hidden[0, -1].to(lm.device)  # where the lens and the unembedding read (blocks may be elsewhere)
            if candidates is None:
                logits = lens.logits(lm, state.unsqueeze(0), layer_id)[0]
            else:  # the task's answer candidates only: C rows of the unembedding, not all V
                logits = lm.adapter.head(lens.apply(state.unsqueeze(0), layer_id)[0], rows=candidates)
            entropy = float(entropy_top1(logits)[0])
            if entropy < threshold:
                raise StopForward(layer, state.detach().clone(), entropy)

        return check

    return {layer: make(layer) for layer in np.nonzero(mask)[0].tolist()}


@dataclass
class ExitDecision:
    """Where one prompt's real exit stopped, and the token it answered."""

    layer: int  # exit layer; L = the full model answered
    answer_id: int


def exit_answer(lm: LoadedModel, ids: list[int], lens: AffineLens, mask: np.ndarray, threshold: float,
                positions: str = "original", candidates: list[int] | None = None) -> ExitDecision:
    """One prompt through the real hybrid exit: stop at the first confident checkpoint, SPADE from there."""
    device = lm.device
    cand = torch.tensor(candidates, device=device) if candidates else None
    input_ids = torch.tensor([ids], device=device)
    with torch.no_grad():
        try:
            with surgery.checkpoints(lm.adapter.blocks, _checks(lm, lens, mask, threshold, cand)):
                out = lm.model(input_ids=input_ids, use_cache=False, logits_to_keep=1)
        except StopForward as stop:
            logits = spade_continue(lm, stop.state, stop.layer, ids[-1], spade_position(len(ids) - 1, positions))
            layer = stop.layer
        else:
            logits = out.logits[0, -1]
            layer = lm.num_layers
    if cand is not None:
        answer = int(cand[logits[cand].argmax()])
    else:
        answer = int(logits.argmax())
    return ExitDecision(layer, answer)


def spade_continue(lm: LoadedModel, state: torch.Tensor, layer: int, token_id: int, position: int) -> torch.Tensor:
    """Logits [V] of SPADE from `layer`: h_layer[T] through blocks layer+1..L only, with the `<s>` cache."""
    with torch.no_grad():
        final = continue_rows(lm, state.view(1, -1), torch.tensor([layer]), torch.tensor([token_id]),
                              torch.tensor([position]), skip_below=layer if skip_is_exact(lm) else 0)
        return lm.adapter.head(final)[0]


def full_answer(lm: LoadedModel, ids: list[int]) -> torch.Tensor:
    """Logits [V] of the plain full forward pass at the last token: the baseline the exit is timed against."""
    with torch.no_grad():
        out = lm.model(input_ids=torch.tensor([ids], device=lm.device), use_cache=False, logits_to_keep=1)
        return out.logits[0, -1]


# --------------------------------------------------------------------------------------------
# Timed runs over a dataset
# --------------------------------------------------------------------------------------------


@dataclass
class RealExitReport:
    """What `run_real_exit` measured: per-example exits and answers, and both paths' wall clock."""

    threshold: float
    checkpoints: str
    example_ids: list[str]
    n_tokens: np.ndarray  # [N]
    exit_layers: np.ndarray  # [N]
    answers: np.ndarray  # [N] token ids
    full_answers: np.ndarray  # [N] token ids
    gold: np.ndarray | None  # [N] token ids
    full_seconds: float  # total wall clock of the plain full passes (all repeats)
    exit_seconds: float  # total wall clock of the real-exit runs (all repeats)
    simulated_fraction: float  # mean cost / full cost of the exits taken (block-token units)
    num_layers: int
    repeats: int
    cost: dict
    other_work: int = 0  # other operations that ran on the same model during the timing (0: a quiet run)

    @property
    def measured_speedup(self) -> float:
        return self.full_seconds / self.exit_seconds if self.exit_seconds > 0 else float("nan")

    @property
    def simulated_speedup(self) -> float:
        return 1.0 / self.simulated_fraction

    def to_dict(self) -> dict:
        """JSON-ready summary (exit rate, agreement, ms per example, speedups) plus one entry per example."""
        n = len(self.example_ids)
        out = {
            "threshold": self.threshold,
            "checkpoints": self.checkpoints,
            "examples": n,
            "num_layers": self.num_layers,
            "repeats": self.repeats,
            "mean_exit_layer": float(self.exit_layers.mean()),
            "exit_rate": float((self.exit_layers < self.num_layers).mean()),
            "agreement": float((self.answers == self.full_answers).mean()),
            "full_ms_per_example": 1000 * self.full_seconds / (n * self.repeats),
            "exit_ms_per_example": 1000 * self.exit_seconds / (n * self.repeats),
            "measured_speedup": self.measured_speedup,
            "simulated_compute_fraction": self.simulated_fraction,
            "simulated_speedup": self.simulated_speedup,
            "cost": self.cost,
            "other_work_during_timing": self.other_work,
            "per_example": [
                {"example_id": e, "n_tokens": int(t), "exit_layer": int(x), "answer_id": int(a)}
                for e, t, x, a in zip(self.example_ids, self.n_tokens, self.exit_layers, self.answers)
            ],
        }
        if self.gold is not None:
            out["accuracy"] = float((self.answers == self.gold).mean())
            out["full_accuracy"] = float((self.full_answers == self.gold).mean())
        return out


@operation
def run_real_exit(
    lm: LoadedModel,
    prompts: list[PreparedPrompt],
    lens: AffineLens,
    threshold: float,
    checkpoints: Checkpoints = Checkpoints(),
    cost: CostModel | None = None,
    repeats: int = 3,
    positions: str = "original",
    progress=None,
) -> RealExitReport:
    """Real exits over `prompts`, timed against full passes (interleaved, `repeats` rounds)."""
    if not prompts:
        raise InputError("no examples to run")
    threshold = check_number("the exit threshold (an entropy in nats)", threshold, 0)
    repeats = check_int("repeats", repeats, 1)
    if not isinstance(lens, AffineLens):
        raise InputError(f"the exit confidence needs a linear SPADE lens (AffineLens), not {type(lens).__name__}")
    if lens.kind != "linear_spade":
        raise InputError(f"the exit confidence needs a linear SPADE lens, not a {lens.kind}")
    lens.check_matches(lm)
    if repeats < 1:
        raise InputError("repeats must be at least 1")
    L = lm.num_layers
    mask = checkpoints.mask(L)
    if not mask.any():
        raise InputError(f"no checkpoint layer below {L} with {checkpoints.describe()}")
    cost = cost or CostModel.from_lm(lm)
    sync = torch.cuda.synchronize if lm.device.type == "cuda" else (lambda: None)

    # warm up both paths (kernels, caches, the <s> cache), untimed
    exit_answer(lm, prompts[0].ids, lens, mask, threshold, positions, prompts[0].candidates)
    full_answer(lm, prompts[0].ids)

    started_before, running_before = lm.activity.snapshot()
    n = len(prompts)
    layers = np.zeros(n, dtype=np.int64)
    answers = np.zeros(n, dtype=np.int64)
    finals = np.zeros(n, dtype=np.int64)
    full_s = exit_s = 0.0
    for round_ in range(repeats):
        for i, prompt in enumerate(prompts):
            order = ("full", "exit") if (i + round_) % 2 == 0 else ("exit", "full")
            for which in order:
                sync()
                start = time.perf_counter()
                if which == "full":
                    logits = full_answer(lm, prompt.ids)
                    sync()
                    full_s += time.perf_counter() - start
                    if prompt.candidates:
                        finals[i] = prompt.candidates[int(logits[prompt.candidates].argmax())]
                    else:
                        finals[i] = int(logits.argmax())
                else:
                    decision = exit_answer(lm, prompt.ids, lens, mask, threshold, positions, prompt.candidates)
                    sync()
                    exit_s += time.perf_counter() - start
                    layers[i], answers[i] = decision.layer, decision.answer_id
            if progress is not None:
                progress((round_ * n + i + 1) / (repeats * n), f"round {round_ + 1}/{repeats}, example {i + 1}/{n}")

    started_after, running_after = lm.activity.snapshot()
    other_work = (started_after - started_before) + max(running_before, running_after) - 1
    n_tokens = np.array([len(p.ids) for p in prompts])
    n_choices = np.array([len(p.candidates) if p.candidates else 0 for p in prompts])
    table = hybrid_costs(n_tokens, L, cost, mask, n_choices) / full_cost(n_tokens, L, cost)[:, None]
    fraction = float(table[np.arange(n), layers].mean())
    gold = np.array([p.gold_id for p in prompts]) if all(p.gold_id is not None for p in prompts) else None
    return RealExitReport(
        threshold=float(threshold), checkpoints=checkpoints.describe(), example_ids=[p.example_id for p in prompts],
        n_tokens=n_tokens, exit_layers=layers, answers=answers, full_answers=finals, gold=gold,
        full_seconds=full_s, exit_seconds=exit_s, simulated_fraction=fraction, num_layers=L, repeats=repeats,
        cost=cost.to_dict(), other_work=other_work,
    )


def format_real_exit(report: RealExitReport) -> str:
    """The report as a few lines of text for the CLI."""
    d = report.to_dict()
    lines = [
        f"{d['examples']} examples x {d['repeats']} rounds, threshold {d['threshold']:g}, "
        f"checkpoints {d['checkpoints']}",
        f"mean exit layer {d['mean_exit_layer']:.1f} of {d['num_layers']} ({d['exit_rate']:.0%} exit early); "
        f"agreement with the full model {d['agreement']:.3f}",
    ]
    if "accuracy" in d:
        lines.append(f"accuracy {d['accuracy']:.3f} (full model {d['full_accuracy']:.3f})")
    if report.other_work:
        lines.append(f"note: {report.other_work} other operation(s) used the same model during the timing "
                     "(another session?): the wall-clock figures are disturbed")
    lines += [
        f"wall clock per example: full pass {d['full_ms_per_example']:.1f} ms, "
        f"real exit {d['exit_ms_per_example']:.1f} ms",
        f"measured speedup {d['measured_speedup']:.2f}x; "
        f"simulated compute fraction {d['simulated_compute_fraction']:.3f} (speedup {d['simulated_speedup']:.2f}x)",
    ]
    return "\n".join(lines)
