"""Real hybrid early exit: the forward pass actually stops at the exit layer, then SPADE answers.

A batch of prompts runs through the model's own forward (any architecture), right-padded, with a
checkpoint before the block after each checkpoint layer l (`models.surgery.checkpoints`, scoped to
this call only). It reads h_l at each prompt's answer row, maps it with linear SPADE, and the
prompts whose entropy there is below the threshold leave the batch with h_l[T]: the blocks above
run on the prompts that stay, and when none stays the forward stops. SPADE then continues the
exited rows, each from its own layer, through the blocks above (attending to the cached `<s>`) in
one pass, with the blocks below the lowest exit doing no work. A prompt never confident finishes the
forward and the model's own logits answer.

One prompt at a time is the latency a chat user feels. On a CPU it cannot beat the full pass on
short prompts: a block over twenty tokens costs about what it costs over one (reading its weights
dominates), so continuing one row through the blocks above costs nearly what finishing would. A
batch is the throughput a server feels: there a block's cost grows with the rows it computes, and
the rows that left save what the simulation counts.

`run_real_exit` times this against plain full forward passes over the same batches, in the same
process, interleaved (alternating which goes first), and reports the measured wall-clock speedup
beside the simulated compute fraction of the exits it actually took.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..engine import continue_rows, pad_right, prepare_examples, skip_is_exact
from ..errors import InputError, check_int, check_number
from ..lenses.affine import AffineLens
from ..lenses.spade import spade_position
from ..lenses.stats import choice_entropy_top1, shortlist_entropy
from ..limits import DEFAULT_TOKEN_LIMIT
from ..models import surgery
from ..models.loading import LoadedModel, operation
from ..progress import Progress
from .cost import Checkpoints, CostModel, full_cost, hybrid_costs
from .real_report import RealExitReport


@dataclass
class PreparedPrompt:
    """Token ids (with `<s>`) the model reads, and the gold token that follows them."""

    example_id: str
    ids: list[int]
    gold_id: int | None = None
    candidates: list[int] | None = None  # restrict confidence and answer to these tokens
    fingerprint: str | None = None  # of the model whose tokenizer prepared it (`prepare_prompts`)


def prepare_prompts(lm: LoadedModel, examples, max_tokens: int = DEFAULT_TOKEN_LIMIT,
                    skipped: list | None = None) -> list[PreparedPrompt]:
    """`Example`s of a dataset -> model inputs, exactly as the sweep prepares them (split at the gold
    answer's first token; rows with choices answer among their choices' first tokens). Examples the
    sweep would skip are skipped here too (appended to `skipped` as (id, reason))."""
    prepared, dropped = prepare_examples(lm, examples, max_tokens)
    if skipped is not None:
        skipped.extend(dropped)
    fingerprint = lm.fingerprint()
    return [PreparedPrompt(p.id, list(p.token_ids), p.gold_id, list(p.choice_ids) if p.choice_ids else None,
                           fingerprint) for p in prepared]


def _check_prompts(lm: LoadedModel, prompts) -> None:
    """InputError unless `prompts` are PreparedPrompts this model's tokenizer could have made."""
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, (list, tuple)):
        raise InputError(f"prompts is a list of PreparedPrompt (prepare_prompts), not {type(prompts).__name__}")
    if not prompts:
        raise InputError("no examples to run")
    vocab, fingerprint = lm.adapter.lm_head.weight.shape[0], lm.fingerprint()
    for prompt in prompts:
        if not isinstance(prompt, PreparedPrompt):
            raise InputError(f"prompts holds a {type(prompt).__name__}, not a PreparedPrompt (prepare_prompts)")
        if prompt.fingerprint not in (None, fingerprint):
            raise InputError(f"prompt {prompt.example_id} was prepared for another model (fingerprint "
                             f"{prompt.fingerprint}), not {lm.name} ({fingerprint}): prepare_prompts with this model")
        ids = prompt.ids
        if not ids or ids[0] != lm.bos_id or not all(isinstance(i, int) and 0 <= i < vocab for i in ids):
            raise InputError(f"prompt {prompt.example_id} is not token ids of {lm.name} starting with its start "
                             "token: prepare_prompts with this model")


@dataclass
class ExitDecision:
    """Where one prompt's real exit stopped, and the token it answered."""

    layer: int  # exit layer; L = the full model answered
    answer_id: int


class _Batch:
    """A batch of prompts as the model reads it: right-padded ids, each answer row, each one's choices."""

    def __init__(self, lm: LoadedModel, prompts: list[PreparedPrompt], shortlist: torch.Tensor | None = None):
        self.prompts, self.shortlist = prompts, shortlist
        self.ids, self.mask = pad_right(lm, [p.ids for p in prompts])
        self.last = torch.tensor([len(p.ids) - 1 for p in prompts])
        width = max((len(p.candidates) for p in prompts if p.candidates), default=0)
        self.choices = None  # [B, C] token ids, -1 padding (a row without choices: all -1)
        if width:
            self.choices = torch.full((len(prompts), width), -1, dtype=torch.long)
            for row, p in enumerate(prompts):
                if p.candidates:
                    self.choices[row, : len(p.candidates)] = torch.tensor(p.candidates)

    def answers(self, logits: torch.Tensor, rows: torch.Tensor) -> list[int]:
        """Each row's answer: its top token, among its choices where it has them."""
        if self.choices is None:
            return logits.argmax(-1).tolist()
        return choice_entropy_top1(logits, self.choices[rows])[1].tolist()

    def confidence(self, lm: LoadedModel, lens: AffineLens, states: torch.Tensor, layer: int,
                   rows: torch.Tensor) -> torch.Tensor:
        """Linear SPADE's entropy of each row at `layer`, as the sweep records it: over the row's
        choices, else over the shortlist, else over the whole vocabulary (the paper's confidence).
        Without the whole vocabulary, only the rows of the unembedding those tokens use are read."""
        mapped = lens.apply(states.unsqueeze(0), slice(layer, layer + 1))[0]  # one map for all rows
        choices = self.choices[rows] if self.choices is not None else torch.full((len(rows), 1), -1)
        has = (choices >= 0).any(-1)
        if self.shortlist is None and not bool(has.all()):
            return choice_entropy_top1(lm.adapter.head(mapped), choices)[0]
        wanted = torch.unique(torch.cat([choices[choices >= 0]] + ([self.shortlist] if self.shortlist is not None
                                                                     else [])))
        logits = lm.adapter.head(mapped, rows=wanted)
        entropy = torch.empty(len(rows), device=logits.device)
        with_choices, without = has.to(logits.device), (~has).to(logits.device)
        if bool(has.any()):
            columns = torch.searchsorted(wanted, choices[has].clamp_min(0))
            entropy[with_choices] = choice_entropy_top1(logits[with_choices], choices[has], columns)[0]
        if not bool(has.all()):
            entropy[without] = shortlist_entropy(logits[without][:, torch.searchsorted(wanted, self.shortlist)
                                                                 .to(logits.device)])
        return entropy


def exit_answers(lm: LoadedModel, prompts: list[PreparedPrompt], lens: AffineLens, mask: np.ndarray,
                 threshold: float, positions: str = "original", shortlist: torch.Tensor | None = None
                 ) -> list[ExitDecision]:
    """A batch of prompts through the real hybrid exit: each leaves at its first confident checkpoint
    and SPADE answers from there; the rest finish the forward. `shortlist` [S] sorted token ids: the
    confidence of prompts without choices is over these only (`SweepSettings.confidence_shortlist`)."""
    batch = _Batch(lm, prompts, shortlist)
    left: dict[int, tuple[int, torch.Tensor]] = {}  # row -> (exit layer, h_layer at its answer)

    def checkpoint(layer):
        def check(hidden, rows):
            # read where the lens and the unembedding are (the block may be on another device)
            states = hidden[torch.arange(len(rows), device=hidden.device), batch.last[rows].to(hidden.device)]
            states = states.to(lm.device)
            leave = (batch.confidence(lm, lens, states, layer, rows) < threshold).cpu()
            for row, state in zip(rows[leave].tolist(), states[leave.to(lm.device)]):
                left[row] = (layer, state)
            return ~leave

        return check

    decisions: list[ExitDecision | None] = [None] * len(prompts)
    with torch.no_grad():
        try:
            checks = {layer: checkpoint(layer) for layer in np.nonzero(mask)[0].tolist()}
            with surgery.checkpoints(lm.adapter.blocks, checks) as plan:
                out = lm.model.base_model(input_ids=batch.ids.to(lm.input_device),
                                          attention_mask=batch.mask.to(lm.input_device), use_cache=False)
        except surgery.Stopped:
            pass
        else:
            stayed = plan.live if plan.live is not None else torch.arange(len(prompts))
            hidden = out.last_hidden_state
            final = hidden[torch.arange(len(stayed), device=hidden.device), batch.last[stayed].to(hidden.device)]
            for row, answer in zip(stayed.tolist(), batch.answers(lm.adapter.head(final), stayed)):
                decisions[row] = ExitDecision(lm.num_layers, answer)
        if left:  # one continuation for every row that left, whatever its layer: the blocks are read once
            rows = sorted(left)
            layers = torch.tensor([left[row][0] for row in rows])
            states = torch.stack([left[row][1] for row in rows])
            tokens = torch.tensor([prompts[row].ids[-1] for row in rows])
            where = torch.tensor([spade_position(int(batch.last[row]), positions) for row in rows])
            final = continue_rows(lm, states, layers, tokens, where,
                                  skip_below=int(layers.min()) if skip_is_exact(lm) else 0)
            for row, layer, answer in zip(rows, layers.tolist(), batch.answers(lm.adapter.head(final),
                                                                                torch.tensor(rows))):
                decisions[row] = ExitDecision(layer, answer)
    return decisions


def exit_answer(lm: LoadedModel, ids: list[int], lens: AffineLens, mask: np.ndarray, threshold: float,
                positions: str = "original", candidates: list[int] | None = None) -> ExitDecision:
    """One prompt through the real hybrid exit (a batch of one)."""
    return exit_answers(lm, [PreparedPrompt("", list(ids), None, candidates)], lens, mask, threshold, positions)[0]


def full_answers(lm: LoadedModel, prompts: list[PreparedPrompt]) -> list[int]:
    """Each prompt's answer from the plain full forward pass over the same padded batch: the
    baseline the exit is timed against (the head reads only each answer row)."""
    batch = _Batch(lm, prompts)
    with torch.no_grad():
        hidden = lm.model.base_model(input_ids=batch.ids.to(lm.input_device),
                                     attention_mask=batch.mask.to(lm.input_device), use_cache=False).last_hidden_state
        final = hidden[torch.arange(len(prompts), device=hidden.device), batch.last.to(hidden.device)]
        return batch.answers(lm.adapter.head(final), torch.arange(len(prompts)))


def spade_continue(lm: LoadedModel, state: torch.Tensor, layer: int, token_id: int, position: int) -> torch.Tensor:
    """Logits [V] of SPADE from `layer`: h_layer[T] through blocks layer+1..L only, with the `<s>` cache."""
    with torch.no_grad():
        final = continue_rows(lm, state.view(1, -1), torch.tensor([layer]), torch.tensor([token_id]),
                              torch.tensor([position]), skip_below=layer if skip_is_exact(lm) else 0)
        return lm.adapter.head(final)[0]


def full_answer(lm: LoadedModel, ids: list[int]) -> torch.Tensor:
    """Logits [V] of the plain full forward pass at the last token."""
    with torch.no_grad():
        out = lm.model(input_ids=torch.tensor([ids], device=lm.input_device), use_cache=False, logits_to_keep=1)
        return out.logits[0, -1]


# --------------------------------------------------------------------------------------------
# Timed runs over a dataset
# --------------------------------------------------------------------------------------------


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
    progress: Progress | None = None,
    batch_size: int = 1,
    shortlist: list[int] | None = None,
) -> RealExitReport:
    """Real exits over `prompts`, timed against full passes over the same batches (interleaved,
    `repeats` rounds). `batch_size` 1 measures the latency of one prompt; more, the throughput of
    batches of prompts of like lengths, from which exited prompts leave (see the module doc).
    `shortlist`: token ids the confidence of prompts without choices is taken over (each checkpoint
    reads S rows of the unembedding, and is charged S)."""
    _check_prompts(lm, prompts)
    threshold = check_number("the exit threshold (an entropy in nats)", threshold, 0)
    repeats = check_int("repeats", repeats, 1)
    batch_size = check_int("batch_size", batch_size, 1, 4096)
    if not isinstance(lens, AffineLens):
        raise InputError(f"the exit confidence needs a linear SPADE lens (AffineLens), not {type(lens).__name__}")
    if lens.kind != "linear_spade":
        raise InputError(f"the exit confidence needs a linear SPADE lens, not a {lens.kind}")
    lens.check_matches(lm)
    L = lm.num_layers
    mask = checkpoints.mask(L)
    if not mask.any():
        raise InputError(f"no checkpoint layer below {L} with {checkpoints.describe()}")
    cost = cost or CostModel.from_lm(lm)
    sync = torch.cuda.synchronize if lm.device.type == "cuda" else (lambda: None)
    n = len(prompts)
    by_length = sorted(range(n), key=lambda i: len(prompts[i].ids))  # batches of like lengths: little padding
    groups = [by_length[i : i + batch_size] for i in range(0, n, batch_size)]

    vocab = lm.adapter.lm_head.weight.shape[0]
    if shortlist is not None:
        if not shortlist or not all(isinstance(t, int) and 0 <= t < vocab for t in shortlist):
            raise InputError(f"the shortlist must be token ids below the vocabulary size {vocab}")
        shortlist = torch.tensor(sorted(set(shortlist)))

    # warm up both paths (kernels, caches, the <s> cache), untimed
    exit_answers(lm, [prompts[i] for i in groups[0]], lens, mask, threshold, positions, shortlist)
    full_answers(lm, [prompts[i] for i in groups[0]])

    started_before, running_before = lm.activity.snapshot()
    layers = np.zeros(n, dtype=np.int64)
    answers = np.zeros(n, dtype=np.int64)
    finals = np.zeros(n, dtype=np.int64)
    full_s = exit_s = 0.0
    for round_ in range(repeats):
        for g, rows in enumerate(groups):
            batch = [prompts[i] for i in rows]
            for which in ("full", "exit") if (g + round_) % 2 == 0 else ("exit", "full"):
                sync()
                start = time.perf_counter()
                if which == "full":
                    full = full_answers(lm, batch)
                    sync()
                    full_s += time.perf_counter() - start
                    finals[rows] = full
                else:
                    decisions = exit_answers(lm, batch, lens, mask, threshold, positions, shortlist)
                    sync()
                    exit_s += time.perf_counter() - start
                    layers[rows] = [d.layer for d in decisions]
                    answers[rows] = [d.answer_id for d in decisions]
            if progress is not None:
                done = round_ * n + sum(len(r) for r in groups[: g + 1])
                progress(done, repeats * n, f"round {round_ + 1}/{repeats}, example {done - round_ * n}/{n}")

    started_after, running_after = lm.activity.snapshot()
    other_work = (started_after - started_before) + max(running_before, running_after) - 1
    n_tokens = np.array([len(p.ids) for p in prompts])
    n_choices = np.array([len(p.candidates) if p.candidates else 0 for p in prompts])
    if shortlist is not None:  # a checkpoint reads the shortlist's rows of the unembedding, not all V
        n_choices = np.where(n_choices > 0, n_choices, len(shortlist))
    table = hybrid_costs(n_tokens, L, cost, mask, n_choices) / full_cost(n_tokens, L, cost)[:, None]
    fraction = float(table[np.arange(n), layers].mean())
    gold = np.array([p.gold_id for p in prompts]) if all(p.gold_id is not None for p in prompts) else None
    return RealExitReport(
        threshold=float(threshold), checkpoints=checkpoints.describe(), example_ids=[p.example_id for p in prompts],
        n_tokens=n_tokens, exit_layers=layers, answers=answers, full_answers=finals, gold=gold,
        full_seconds=full_s, exit_seconds=exit_s, simulated_fraction=fraction, num_layers=L, repeats=repeats,
        cost=cost.to_dict(), other_work=other_work, batch_size=batch_size,
        shortlist_size=0 if shortlist is None else len(shortlist),
    )


def format_real_exit(report: RealExitReport) -> str:
    """The report as a few lines of text for the CLI."""
    d = report.to_dict()
    lines = [
        f"{d['examples']} examples x {d['repeats']} rounds in "
        + (f"batches of {d['batch_size']}" if d["batch_size"] > 1 else "one prompt at a time")
        + f", threshold {d['threshold']:g}, checkpoints {d['checkpoints']}"
        + (f", confidence over a shortlist of {report.shortlist_size} tokens" if report.shortlist_size else ""),
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
