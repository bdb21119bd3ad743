"""Which linear-SPADE map scores which example of a sweep: a saved map fitted on none of them, or
k-fold cross-fitting on the dataset itself (the sweep's `linear_spade` setting chooses)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..lenses.affine import AffineLens
from ..lenses.linear_spade import lens_digest, load_linear_spade, usable_for
from ..models.loading import LoadedModel
from .results import SweepSettings


@dataclass
class LinearPlan:
    """How a sweep scores linear SPADE: which map, or how many cross-fitting folds."""

    mode: str  # "saved", "crossfit" or "off"
    source: str  # one line for the outputs: how the map was fitted, never on the example it scores
    lens: AffineLens | None = None
    folds: int = 0

    def key(self) -> dict:
        """The plan's part of the sweep cache key: the map by its digest, not its object."""
        return {"mode": self.mode, "lens": lens_digest(self.lens) if self.lens is not None else None,
                "folds": self.folds}


def plan_linear_spade(lm: LoadedModel, examples: Sequence, dataset_name: str, settings: SweepSettings,
                      linear_spade_map: AffineLens | str | Path | None = None) -> LinearPlan:
    """A saved map that matches the model and was fitted on none of these examples (auto, saved);
    otherwise k-fold cross-fitting on the dataset itself (auto, crossfit); or nothing (off)."""
    choice = settings.linear_spade
    if choice == "off":
        return LinearPlan("off", "off")
    note = ""
    if choice in ("auto", "saved"):
        if isinstance(linear_spade_map, AffineLens):
            linear_spade_map.check_matches(lm)
            lens = linear_spade_map
        else:
            lens = load_linear_spade(lm, linear_spade_map)
        if lens is not None:
            ok, why = usable_for(lens, examples, settings.spade_positions)
            if ok:
                meta = lens.meta
                trained_on = meta.get("training_set", "?")
                source = (f"separate training set: maps fitted on {meta.get('n_train', '?')} examples of "
                          f"'{trained_on}' (training-set hash {meta.get('training_set_hash', '?')[:12]}), "
                          "none of them in this dataset")
                if trained_on != dataset_name:
                    source += ("; note: fitted on another task, and linear SPADE transfers poorly across "
                               "tasks (`linear_spade='crossfit'` fits on this one)")
                return LinearPlan("saved", source, lens)
            if choice == "saved":
                raise InputError(f"the saved linear-SPADE map cannot score this dataset: {why}")
            note = f"; the saved map was not used: {why}"
        elif choice == "saved":
            raise InputError("no saved linear-SPADE map for this model: fit one first (`fit_linear_spade`, or "
                             "the `calibrate` command), or use `linear_spade='crossfit'`")
    if len(examples) < 2:
        return LinearPlan("off", "none: cross-fitting needs at least 2 examples" + note)
    folds = min(settings.folds, len(examples))
    source = (f"{folds}-fold cross-fitting on this dataset: each example is scored by maps fitted (closed-form "
              f"ridge {settings.ridge:g}) on the other {folds - 1} folds only{note}")
    return LinearPlan("crossfit", source, folds=folds)
