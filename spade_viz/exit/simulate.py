"""Hybrid early exit simulated on a sweep, with its baselines and the paper-style operating points.

**Hybrid exit (SPADE-EXIT)**: at each checkpoint layer l (in order) the linear-SPADE entropy of
the answer row is the confidence; the first time it is below the threshold tau, the example
exits and SPADE from layer l answers. Never confident: the full model answers (exit layer L).

**Baselines on the same data**: the full model; SPADE at one fixed layer for every example;
classic early exit (logit-lens entropy as confidence, logit-lens answer); and an oracle that
exits each example at the earliest layer from which SPADE stays right (for an example the
full model gets wrong: from which SPADE keeps the full model's answer), paying no checkpoints.

All of it is vectorised numpy over the dense arrays of `ExitArrays`; `ExitSimulator.at` is
what a threshold slider calls (microseconds for 1000 examples x 30 layers). Compute is in
block-token units, see `spade_viz.exit.cost`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from ..errors import InputError
from .arrays import ExitArrays
from .cost import Checkpoints, CostModel, classic_costs, continuation_costs, full_cost, hybrid_costs

CURVE_COLUMNS = ["threshold", "accuracy", "agreement", "compute_fraction", "speedup", "mean_exit_layer", "exit_rate"]
_CHUNK_CELLS = 4_000_000  # bool cells per chunk when sweeping thresholds: bounds memory on big datasets


@dataclass(frozen=True)
class ExitPoint:
    """Dataset-level result of one policy at one setting."""

    threshold: float
    accuracy: float  # share of examples whose answer is the gold token
    agreement: float  # share whose answer is the full model's answer
    compute_fraction: float  # mean over examples of cost / full-pass cost
    speedup: float  # 1 / compute_fraction
    mean_exit_layer: float
    exit_rate: float  # share of examples that exit before layer L

    def to_dict(self) -> dict:
        """The fields as plain floats (NaN kept, e.g. the full model's threshold), for JSON reports."""
        return {key: (None if value is None else float(value)) for key, value in asdict(self).items()}


@dataclass
class ExitOutcome:
    """Per-example result of a policy at one threshold, and its summary."""

    point: ExitPoint
    exit_layer: np.ndarray  # [N] int
    correct: np.ndarray  # [N] bool
    agree: np.ndarray  # [N] bool
    fraction: np.ndarray  # [N] float: cost / full-pass cost
    answer: np.ndarray | None  # [N] the answer token strings


def _summarise(threshold, exit_layer, correct, agree, fraction, num_layers) -> ExitPoint:
    mean_fraction = float(fraction.mean()) if len(fraction) else float("nan")
    return ExitPoint(
        threshold=float(threshold),
        accuracy=float(correct.mean()) if len(correct) else float("nan"),
        agreement=float(agree.mean()) if len(agree) else float("nan"),
        compute_fraction=mean_fraction,
        speedup=1.0 / mean_fraction if mean_fraction > 0 else float("inf"),
        mean_exit_layer=float(exit_layer.mean()) if len(exit_layer) else float("nan"),
        exit_rate=float((exit_layer < num_layers).mean()) if len(exit_layer) else float("nan"),
    )


class _Policy:
    """Threshold policy: exit at the first checkpoint whose confidence entropy is below tau."""

    def __init__(self, confidence: np.ndarray, mask: np.ndarray, correct: np.ndarray, agree: np.ndarray,
                 fraction: np.ndarray, top1: np.ndarray | None):
        n, width = confidence.shape
        self.num_layers = width - 1
        # [N, L]: the confidence at checkpoint layers, +inf elsewhere (never below any threshold)
        self.confidence = np.where(mask[None, :-1], confidence[:, :-1], np.inf)
        self.correct, self.agree, self.fraction, self.top1 = correct, agree, fraction, top1
        self.rows = np.arange(n)
        self._running_min = None

    def exit_layers(self, threshold: float) -> np.ndarray:
        below = self.confidence < threshold
        return np.where(below.any(axis=1), below.argmax(axis=1), self.num_layers)

    def at(self, threshold: float, with_answers: bool = True) -> ExitOutcome:
        layer = self.exit_layers(threshold)
        correct = self.correct[self.rows, layer]
        agree = self.agree[self.rows, layer]
        fraction = self.fraction[self.rows, layer]
        answer = self.top1[self.rows, layer] if (with_answers and self.top1 is not None) else None
        point = _summarise(threshold, layer, correct, agree, fraction, self.num_layers)
        return ExitOutcome(point, layer, correct, agree, fraction, answer)

    def curve(self, thresholds: np.ndarray) -> pd.DataFrame:
        """One row per threshold, all thresholds at once (vectorised, chunked)."""
        if self._running_min is None:
            # the exit layer for tau is the first layer whose running minimum is below tau, i.e. the
            # number of layers whose running minimum is >= tau (the running minimum never increases)
            self._running_min = np.minimum.accumulate(self.confidence, axis=1)
        running = self._running_min
        n, layers = running.shape
        thresholds = np.asarray(thresholds, dtype=np.float64)
        out = np.empty((len(thresholds), 6))
        step = max(1, _CHUNK_CELLS // max(1, n * layers))
        for start in range(0, len(thresholds), step):
            taus = thresholds[start : start + step]
            exit_layer = (running[None, :, :] >= taus[:, None, None]).sum(axis=2)  # [t, N]; L = never
            idx = (self.rows[None, :], exit_layer)
            block = out[start : start + len(taus)]
            block[:, 0] = self.correct[idx].mean(axis=1)
            block[:, 1] = self.agree[idx].mean(axis=1)
            block[:, 2] = self.fraction[idx].mean(axis=1)
            block[:, 3] = exit_layer.mean(axis=1)
            block[:, 4] = (exit_layer < self.num_layers).mean(axis=1)
        frame = pd.DataFrame(
            {
                "threshold": thresholds,
                "accuracy": out[:, 0],
                "agreement": out[:, 1],
                "compute_fraction": out[:, 2],
                "speedup": 1.0 / out[:, 2],
                "mean_exit_layer": out[:, 3],
                "exit_rate": out[:, 4],
            }
        )
        return frame[CURVE_COLUMNS]


class ExitSimulator:
    """Exit policies over one sweep, one checkpoint layout and one cost model.

    Construction does all the per-example work (cost tables, masked confidences) once; every
    `at(threshold)` afterwards is a handful of numpy operations on [N, L] arrays.
    """

    def __init__(
        self,
        arrays: ExitArrays,
        cost: CostModel,
        checkpoints: Checkpoints = Checkpoints(),
        confidence: str = "linear_spade",
        answer: str = "spade",
    ):
        if len(arrays) == 0:
            raise InputError("the sweep has no examples")
        arrays.require(confidence, " to use as the exit confidence")
        arrays.require(answer, " to answer at the exit layer")
        self.arrays, self.cost, self.checkpoints = arrays, cost, checkpoints
        self.confidence_decoder, self.answer_decoder = confidence, answer
        self.num_layers = L = arrays.num_layers
        self.mask = checkpoints.mask(L)
        if not self.mask.any():
            raise InputError(f"no checkpoint layer below {L} with {checkpoints.describe()}: lower the first layer")
        self.full = full_cost(arrays.n_tokens, L, cost)
        self.hybrid = _Policy(
            arrays.entropy[confidence], self.mask, arrays.correct[answer], arrays.agree_final[answer],
            hybrid_costs(arrays.n_tokens, L, cost, self.mask, arrays.n_choices) / self.full[:, None],
            arrays.top1[answer],
        )
        self._classic = None

    # ---------------------------------------------------------------- hybrid

    def at(self, threshold: float, with_answers: bool = True) -> ExitOutcome:
        """The hybrid exit at one threshold: per-example exit layers, answers, compute."""
        return self.hybrid.at(threshold, with_answers)

    def thresholds(self, count: int = 200, decoder: str | None = None) -> np.ndarray:
        """About `count` thresholds spread like the confidence entropies at checkpoint layers (by rank),
        each halfway between two neighbouring observed values, so that no threshold sits on an
        observed entropy (a real run's rounding cannot flip an exit), plus the two ends: 0 (never
        exit: the full model plus overheads) and above the largest (always exit at the first checkpoint)."""
        entropy = self.arrays.entropy[decoder or self.confidence_decoder][:, : self.num_layers][:, self.mask[:-1]]
        values = np.unique(entropy[np.isfinite(entropy)])
        if values.size == 0:
            return np.array([0.0])
        gaps = (values[1:] + values[:-1]) / 2
        if gaps.size > count:
            gaps = gaps[np.unique(np.linspace(0, gaps.size - 1, max(2, count)).round().astype(int))]
        top = values.max() + max(1e-3, 1e-3 * abs(values.max()))
        return np.unique(np.concatenate([[0.0], gaps[gaps > 0], [top]]))

    def curve(self, thresholds: np.ndarray | None = None, count: int = 200) -> pd.DataFrame:
        """The hybrid exit's summary at each threshold (default: `thresholds(count)`), one row each."""
        return self.hybrid.curve(self.thresholds(count) if thresholds is None else thresholds)

    # ---------------------------------------------------------------- baselines

    def full_model(self) -> ExitPoint:
        """The baseline every exit is measured against: every example runs all L layers."""
        L = self.num_layers
        correct = self.arrays.final_correct
        return _summarise(float("nan"), np.full(len(correct), L), correct, np.ones(len(correct), bool),
                          np.ones(len(correct)), L)

    def fixed_layer(self, decoder: str | None = None) -> pd.DataFrame:
        """SPADE (or `decoder`) at one fixed layer for every example, no checkpoints, per layer."""
        decoder = decoder or self.answer_decoder
        fraction = continuation_costs(self.arrays.n_tokens, self.num_layers, self.cost) / self.full[:, None]
        if decoder not in ("spade", "spade_no_bos"):  # a lens needs no continuation: l blocks + one head
            layers = np.arange(self.num_layers + 1, dtype=np.float64)
            fraction = (layers * self.arrays.n_tokens[:, None] + self.cost.answer_head_units) / self.full[:, None]
        frame = pd.DataFrame(
            {
                "layer": np.arange(self.num_layers + 1),
                "accuracy": self.arrays.correct[decoder].mean(axis=0),
                "agreement": self.arrays.agree_final[decoder].mean(axis=0),
                "compute_fraction": fraction.mean(axis=0),
            }
        )
        frame["speedup"] = 1.0 / frame["compute_fraction"]
        return frame

    @property
    def classic(self) -> _Policy:
        """Classic early exit: logit-lens entropy as confidence, logit-lens answer."""
        if self._classic is None:
            self.arrays.require("logit_lens", " for the classic early-exit baseline")
            self._classic = _Policy(
                self.arrays.entropy["logit_lens"], self.mask, self.arrays.correct["logit_lens"],
                self.arrays.agree_final["logit_lens"],
                classic_costs(self.arrays.n_tokens, self.num_layers, self.cost, self.mask,
                              self.arrays.n_choices) / self.full[:, None],
                self.arrays.top1["logit_lens"],
            )
        return self._classic

    def classic_curve(self, count: int = 200) -> pd.DataFrame:
        """`curve` of the classic early exit, over thresholds spread like the logit-lens entropies."""
        return self.classic.curve(self.thresholds(count, decoder="logit_lens"))

    def oracle_layers(self) -> np.ndarray:
        """[N] earliest layer from which SPADE stays right (wrong-at-the-end examples: from which it
        keeps the full model's answer)."""
        decoder = self.answer_decoder
        final_right = self.arrays.correct[decoder][:, -1:]
        good = np.where(final_right, self.arrays.correct[decoder], self.arrays.agree_final[decoder])
        stays = np.flip(np.logical_and.accumulate(np.flip(good, axis=1), axis=1), axis=1)
        stays[:, -1] = True  # layer L is the full model itself
        return stays.argmax(axis=1)

    def oracle(self) -> ExitOutcome:
        """SPADE at each example's `oracle_layers`, no checkpoints: the bound a perfect confidence would reach."""
        layer = self.oracle_layers()
        rows = np.arange(len(layer))
        fraction = continuation_costs(self.arrays.n_tokens, self.num_layers, self.cost)[rows, layer] / self.full
        arrays, decoder = self.arrays, self.answer_decoder
        correct, agree = arrays.correct[decoder][rows, layer], arrays.agree_final[decoder][rows, layer]
        point = _summarise(float("nan"), layer, correct, agree, fraction, self.num_layers)
        return ExitOutcome(point, layer, correct, agree, fraction, arrays.top1[decoder][rows, layer])

    # ---------------------------------------------------------------- views of the data

    def layer_accuracy(self) -> pd.DataFrame:
        """Long table: accuracy and agreement with the full model of every decoder at every layer."""
        frames = []
        for decoder in self.arrays.decoders:
            frames.append(
                pd.DataFrame(
                    {
                        "decoder": decoder,
                        "layer": np.arange(self.num_layers + 1),
                        "accuracy": self.arrays.correct[decoder].mean(axis=0),
                        "agreement": self.arrays.agree_final[decoder].mean(axis=0),
                    }
                )
            )
        return pd.concat(frames, ignore_index=True)

    def first_layer_reaching(self, decoder: str = "spade", tolerance: float = 0.0) -> int | None:
        """First layer at which the decoder's accuracy reaches the full model's (minus `tolerance`)."""
        accuracy = self.arrays.correct[decoder].mean(axis=0)
        target = float(self.arrays.final_correct.mean()) - tolerance - 1e-12
        hits = np.nonzero(accuracy >= target)[0]
        return int(hits[0]) if len(hits) else None

    def operating_points(self, curve: pd.DataFrame | None = None, tolerance: float = 0.01) -> dict:
        """`operating_points` of the hybrid curve (default: `curve()`) against the full model's accuracy."""
        return operating_points(self.curve() if curve is None else curve, self.full_model().accuracy, tolerance)

    def settings(self) -> dict:
        """What the simulation was run with (decoders, checkpoints, cost, data size), for reports."""
        return {
            "confidence": self.confidence_decoder,
            "answer": self.answer_decoder,
            "checkpoints": self.checkpoints.describe(),
            "checkpoint_layers": np.nonzero(self.mask)[0].tolist(),
            "cost": self.cost.to_dict(),
            "examples": len(self.arrays),
            "num_layers": self.num_layers,
            "mean_tokens": float(self.arrays.n_tokens.mean()),
        }


def operating_points(curve: pd.DataFrame, full_accuracy: float, tolerance: float = 0.01) -> dict:
    """The paper's two points on a threshold curve: the best accuracy (ties: the larger speedup),
    and the largest speedup whose accuracy is within `tolerance` (1 point) of the full model's."""
    if curve.empty:
        return {"best_accuracy": None, "within_1pt": None}
    order = curve.sort_values(["accuracy", "speedup"], ascending=[False, False], kind="stable")
    best = order.iloc[0]
    ok = curve[curve["accuracy"] >= full_accuracy - tolerance - 1e-12]
    within = (ok.sort_values(["speedup", "accuracy"], ascending=[False, False], kind="stable").iloc[0]
              if len(ok) else None)

    def row(r):
        return None if r is None else {key: float(r[key]) for key in CURVE_COLUMNS}

    return {"best_accuracy": row(best), "within_1pt": row(within), "full_accuracy": float(full_accuracy),
            "tolerance": float(tolerance)}


def search_checkpoints(
    arrays: ExitArrays,
    cost: CostModel,
    confidence: str = "linear_spade",
    answer: str = "spade",
    steps: tuple[int, ...] = (1, 2, 3, 4, 6),
    count: int = 100,
    tolerance: float = 0.01,
) -> pd.DataFrame:
    """Every layout "every k-th layer from layer m" (k in `steps`, m in 0..L-1), each scored by the
    largest speedup within `tolerance` of the full model's accuracy over all thresholds; best first.

    Chosen on the same data it is scored on, like the thresholds: an optimistic, in-sample choice.
    """
    rows = []
    for every in steps:
        for start in range(arrays.num_layers):
            checkpoints = Checkpoints(every=every, start=start)
            sim = ExitSimulator(arrays, cost, checkpoints, confidence, answer)
            points = sim.operating_points(sim.curve(count=count), tolerance)
            within, best = points["within_1pt"], points["best_accuracy"]
            rows.append({
                "checkpoints": f"every:{every},from:{start}", "every": every, "start": start,
                "n_checkpoints": int(sim.mask.sum()),
                "speedup_within_1pt": within["speedup"] if within else float("nan"),
                "accuracy_within_1pt": within["accuracy"] if within else float("nan"),
                "threshold_within_1pt": within["threshold"] if within else float("nan"),
                "best_accuracy": best["accuracy"], "speedup_at_best_accuracy": best["speedup"],
            })
    frame = pd.DataFrame(rows)
    return frame.sort_values(["speedup_within_1pt", "best_accuracy", "n_checkpoints"],
                             ascending=[False, False, True], kind="stable").reset_index(drop=True)
