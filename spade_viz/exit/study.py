"""What the Early-exit page holds between reruns: one sweep, its simulators per setting, and the
per-threshold views, all computed from the cached arrays (never from the model).

`ExitStudy.view(...)` builds (and keeps, for a few settings) everything that depends on the
checkpoint layout and cost options: the hybrid curve over all thresholds, the baselines and the
operating points. `StudyView.at(threshold)` is what a slider move costs.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from .arrays import ExitArrays
from .cost import Checkpoints, CostModel
from .simulate import ExitOutcome, ExitSimulator, operating_points


@dataclass(frozen=True)
class ViewKey:
    """The settings a `StudyView` depends on."""

    checkpoints: Checkpoints
    continuation_tokens: float
    include_head: bool
    confidence: str


class StudyView:
    """One setting of checkpoints and cost: curves, baselines and operating points, computed once."""

    def __init__(self, arrays: ExitArrays, cost: CostModel, key: ViewKey, thresholds: int = 200):
        self.arrays, self.key = arrays, key
        self.simulator = ExitSimulator(
            arrays, cost.with_options(continuation_tokens=key.continuation_tokens, include_head=key.include_head),
            key.checkpoints, key.confidence,
        )
        self.curve = self.simulator.curve(count=thresholds)
        self.full = self.simulator.full_model().to_dict()
        self.points = operating_points(self.curve, self.full["accuracy"])

    @cached_property
    def classic(self) -> pd.DataFrame | None:
        return self.simulator.classic_curve() if "logit_lens" in self.arrays.decoders else None

    @cached_property
    def classic_points(self) -> dict | None:
        return None if self.classic is None else operating_points(self.classic, self.full["accuracy"])

    @cached_property
    def fixed(self) -> pd.DataFrame:
        return self.simulator.fixed_layer()

    @cached_property
    def oracle(self) -> dict:
        return self.simulator.oracle().point.to_dict()

    @cached_property
    def layer_accuracy(self) -> pd.DataFrame:
        return self.simulator.layer_accuracy()

    @property
    def max_threshold(self) -> float:
        return float(self.curve["threshold"].max())

    def at(self, threshold: float) -> ExitOutcome:
        """The hybrid exit at one threshold: what a slider move costs."""
        return self.simulator.at(threshold)

    def first_layers(self) -> dict[str, int | None]:
        """Per decoder, the first layer whose accuracy reaches the full model's (None: never)."""
        return {d: self.simulator.first_layer_reaching(d) for d in self.arrays.decoders}

    def points_table(self) -> pd.DataFrame:
        """The full model, the oracle and the operating points of both exits, one row each."""
        rows = [("full model", self.full), ("oracle", self.oracle)]
        rows += [("hybrid: best accuracy", self.points["best_accuracy"]),
                 ("hybrid: largest speedup within 1 pt", self.points["within_1pt"])]
        if self.classic_points:
            rows += [("classic: best accuracy", self.classic_points["best_accuracy"]),
                     ("classic: largest speedup within 1 pt", self.classic_points["within_1pt"])]
        frame = pd.DataFrame([{"policy": name, **(point or {})} for name, point in rows])
        return frame[["policy", "threshold", "accuracy", "agreement", "compute_fraction", "speedup",
                      "mean_exit_layer"]]

    def examples_table(self, outcome: ExitOutcome, gold: np.ndarray | None = None) -> pd.DataFrame:
        """One row per example at a threshold (answers as the sweep recorded them)."""
        arrays = self.arrays
        gold = arrays.gold if gold is None else gold
        frame = pd.DataFrame({
            "example": arrays.example_ids,
            "exit layer": outcome.exit_layer,
            "answer": outcome.answer,
            "gold": gold if gold is not None else "",
            "right": outcome.correct,
            "agrees with full": outcome.agree,
            "full answer": arrays.final_answer,
            "tokens": arrays.n_tokens,
            "compute": outcome.fraction,
        })
        return frame


class ExitStudy:
    """A sweep's arrays and cost model, with a small cache of `StudyView`s by setting.

    `skipped`: the (example id, reason) pairs the sweep could not use, to show beside its results.
    """

    def __init__(self, arrays: ExitArrays, cost: CostModel, max_views: int = 8,
                 skipped: list[tuple[str, str]] | None = None):
        self.arrays, self.cost, self.max_views = arrays, cost, max_views
        self.skipped = list(skipped or [])
        self._views: OrderedDict[ViewKey, StudyView] = OrderedDict()

    def view(self, checkpoints: Checkpoints = Checkpoints(), continuation_tokens: float = 1.0,
             include_head: bool = True, confidence: str = "linear_spade") -> StudyView:
        """The view at one setting, built on first use and kept among the last `max_views`."""
        key = ViewKey(checkpoints, float(continuation_tokens), bool(include_head), confidence)
        if key in self._views:
            self._views.move_to_end(key)
            return self._views[key]
        view = StudyView(self.arrays, self.cost, key)
        self._views[key] = view
        while len(self._views) > self.max_views:
            self._views.popitem(last=False)
        return view
