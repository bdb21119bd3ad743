"""The real early exit with every choice made on data it is not measured on.

The calibration part of a dataset (a share of its examples spread evenly over it, so a file sorted
by topic or difficulty lands on both sides; 0.5 takes every other example) fits linear SPADE, is
swept, and picks the checkpoint layout and threshold (the largest simulated speedup within 1 point
of the full model's accuracy there). The held-out part is then run for real, timed against plain
full passes, and is where the reported accuracy and speedup come from. That is the number a user
can expect on new prompts; a layout and threshold chosen on the examples they are scored on
flatter it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ..engine import read_rows
from ..errors import InputError
from ..lenses.linear_spade import fit_linear_spade
from ..models.loading import LoadedModel
from ..progress import Progress, no_progress
from ..sweep import SweepSettings, run_sweep
from .arrays import ExitArrays
from .cost import Checkpoints, CostModel
from .real import RealExitReport, prepare_prompts, run_real_exit
from .session import FEW_CALIBRATION_EXAMPLES
from .simulate import search_checkpoints


@dataclass
class HonestExit:
    """A real-exit run on held-out examples, with what the calibration part chose."""

    report: RealExitReport
    checkpoints: str
    threshold: float
    simulated_calibration_speedup: float  # what the chosen point promised on the calibration part
    n_calibration: int
    n_heldout: int
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """One JSON object: the issue's fields first, then the full real-exit report."""
        d = self.report.to_dict()
        return {
            "full_accuracy": d.get("full_accuracy"), "accuracy": d.get("accuracy"),
            "measured_speedup": d["measured_speedup"], "simulated_speedup": d["simulated_speedup"],
            "checkpoints": self.checkpoints, "threshold": self.threshold,
            "confidence": "linear_spade" + (f" over a shortlist of {self.report.shortlist_size} tokens"
                                            if self.report.shortlist_size else " over the vocabulary"),
            "n_calibration": self.n_calibration, "n_heldout": self.n_heldout,
            "simulated_calibration_speedup": self.simulated_calibration_speedup,
            "other_work_during_timing": d["other_work_during_timing"], "warnings": list(self.warnings),
            "real_exit": d,
        }




def answer_shortlist(lm: LoadedModel, prompts, top: int = 10) -> list[int]:
    """Every token the full model ranks in its top `top` at the answer of one of `prompts`, and
    their gold tokens: what a task's answers are made of, for a confidence that reads only those
    rows of the unembedding (taken from calibration prompts only)."""
    tokens = {p.gold_id for p in prompts if p.gold_id is not None}
    for start in range(0, len(prompts), 16):
        chunk = prompts[start : start + 16]
        _, final = read_rows(lm, [p.ids for p in chunk], [[len(p.ids) - 1] for p in chunk])
        with torch.no_grad():
            tokens |= set(lm.adapter.head(final).topk(top, dim=-1).indices.flatten().tolist())
    return sorted(tokens)


def calibrated_real_exit(lm: LoadedModel, dataset, calibrate_split: float = 0.5, repeats: int = 3,
                         cost: CostModel | None = None, tolerance: float = 0.01, batch_size: int = 64,
                         shortlist_top: int = 10, progress: Progress = no_progress) -> HonestExit:
    """Fit, sweep and choose on a `calibrate_split` share of `dataset`; run and time the rest in
    batches of `batch_size` (1: one prompt's latency). The confidence is linear SPADE's entropy
    over `answer_shortlist(calibration prompts, shortlist_top)`, both in the calibration sweep
    and in the real exit; `shortlist_top` 0: over the whole vocabulary (the paper's)."""
    if not 0 < calibrate_split < 1:
        raise InputError("`calibrate_split` is the share of examples used for the choices, between 0 and 1")
    examples = list(dataset.examples)
    index = np.arange(len(examples))
    chosen = np.floor((index + 1) * calibrate_split) > np.floor(index * calibrate_split)  # spread evenly
    part = [e for e, c in zip(examples, chosen) if c]
    heldout = [e for e, c in zip(examples, chosen) if not c]
    cut = len(part)
    if cut < 2 or not heldout:
        raise InputError(f"{len(examples)} examples cannot be split {calibrate_split:g} / "
                         f"{1 - calibrate_split:g}: use more examples")
    calibration = replace(dataset, name=f"{dataset.name} (calibration part)", examples=tuple(part),
                          errors=(), source_hash=f"{dataset.source_hash}:calibration:{calibrate_split:g}")
    progress(0, 3, f"fitting linear SPADE on the calibration part ({cut} examples)")
    lens = fit_linear_spade(lm, calibration, save=False).lens
    shortlist = answer_shortlist(lm, prepare_prompts(lm, part), shortlist_top) if shortlist_top else None
    over = f" (confidence over {len(shortlist)} tokens)" if shortlist else ""
    progress(1, 3, "sweeping the calibration part" + over)
    settings = SweepSettings(linear_spade="crossfit", tuned_lens=False, confidence_shortlist=tuple(shortlist or ()))
    arrays = ExitArrays.from_sweep(run_sweep(lm, calibration, settings, use_cache=False))
    if shortlist:  # each checkpoint reads the shortlist's rows of the unembedding where there are no choices
        arrays = replace(arrays, n_choices=np.where(arrays.n_choices > 0, arrays.n_choices, len(shortlist)))
    cost = cost or CostModel.from_lm(lm)
    best = search_checkpoints(arrays, cost, "linear_spade", tolerance=tolerance).iloc[0]
    checkpoints = Checkpoints.parse(best["checkpoints"])
    threshold = float(best["threshold_within_1pt"])
    progress(2, 3, f"chosen on the calibration part: checkpoints {best['checkpoints']}, threshold {threshold:.3f} "
                   f"({best['speedup_within_1pt']:.2f}x simulated there); timing the held-out part")
    prompts = prepare_prompts(lm, heldout)
    report = run_real_exit(lm, prompts, lens, threshold, checkpoints, cost, repeats, batch_size=batch_size,
                           shortlist=shortlist)
    warnings = () if cut >= FEW_CALIBRATION_EXAMPLES else (
        f"only {cut} calibration examples: within 1 point of accuracy then allows exits on examples the "
        "full model gets wrong anyway, so the layout and threshold chosen rarely hold on other prompts "
        f"(use at least {2 * FEW_CALIBRATION_EXAMPLES} examples)",)
    return HonestExit(report, best["checkpoints"], threshold, float(best["speedup_within_1pt"]), cut,
                      len(prompts), warnings)
