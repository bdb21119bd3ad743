"""What a real early-exit run measured (`exit.real.run_real_exit`): plain arrays and wall clock, no torch,
so the app and reports read it without loading the model side."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
    batch_size: int = 1  # prompts per forward pass (1: one prompt's latency; more: a batch's throughput)
    shortlist_size: int = 0  # tokens the confidence is over where a prompt has no choices (0: the vocabulary)

    @property
    def measured_speedup(self) -> float:
        return self.full_seconds / self.exit_seconds if self.exit_seconds > 0 else float("nan")

    @property
    def simulated_speedup(self) -> float:
        return 1.0 / self.simulated_fraction

    @property
    def agreement(self) -> float:
        return float((self.answers == self.full_answers).mean())

    @property
    def mean_exit_layer(self) -> float:
        return float(self.exit_layers.mean())

    @property
    def accuracy(self) -> float | None:
        return None if self.gold is None else float((self.answers == self.gold).mean())

    @property
    def full_accuracy(self) -> float | None:
        return None if self.gold is None else float((self.full_answers == self.gold).mean())

    def ms_per_example(self, path: str) -> float:
        """Wall clock per example and round of the "exit" or the "full" path, in ms."""
        seconds = self.exit_seconds if path == "exit" else self.full_seconds
        return 1000 * seconds / (len(self.example_ids) * self.repeats)

    def to_dict(self) -> dict:
        """JSON-ready summary (exit rate, agreement, ms per example, speedups) plus one entry per example."""
        n = len(self.example_ids)
        out = {
            "threshold": self.threshold,
            "checkpoints": self.checkpoints,
            "examples": n,
            "num_layers": self.num_layers,
            "repeats": self.repeats,
            "batch_size": self.batch_size,
            "confidence_tokens": self.shortlist_size or "vocabulary",
            "mean_exit_layer": self.mean_exit_layer,
            "exit_rate": float((self.exit_layers < self.num_layers).mean()),
            "agreement": self.agreement,
            "full_ms_per_example": self.ms_per_example("full"),
            "exit_ms_per_example": self.ms_per_example("exit"),
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
            out["accuracy"], out["full_accuracy"] = self.accuracy, self.full_accuracy
        return out
