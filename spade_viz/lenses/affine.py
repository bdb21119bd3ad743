"""Per-layer affine maps shared by the tuned lens and linear SPADE.

Both decoders put an affine map `W_l h + b_l` in front of a fixed readout, one map per layer
0..L-1 (layer L is the model's own output). They differ only in what the map's output is:

- "tuned_lens":   a translated residual, read by the logit lens (final norm + unembedding);
- "linear_spade": an approximation of SPADE's final-normed state, read by the unembedding alone.

Maps are saved as safetensors with string metadata (model fingerprint, layers, data hash), and
loaded only for the exact model they were fitted on.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import InputError
from ..files import atomic_output
from ..models.loading import LoadedModel, cache_dir

KINDS = ("tuned_lens", "linear_spade")


class LensMismatch(InputError):
    """A saved lens was fitted on another model, has the wrong shape for it, or is not a lens file at all."""


@dataclass
class AffineLens:
    """weight [L, d_out, d_in], bias [L, d_out]: the map for layers 0..L-1."""

    kind: str
    weight: torch.Tensor
    bias: torch.Tensor
    meta: dict[str, str] = field(default_factory=dict)
    _placed: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _finite: tuple | None = field(default=None, init=False, repr=False, compare=False)  # maps last found finite

    @property
    def num_layers(self) -> int:
        return self.weight.shape[0]

    @classmethod
    def identity(cls, kind: str, num_layers: int, dim: int, meta: dict | None = None) -> "AffineLens":
        """Maps that change nothing (weight I, bias 0): as a tuned lens, exactly the logit lens."""
        eye = torch.eye(dim).expand(num_layers, dim, dim).clone()
        return cls(kind, eye, torch.zeros(num_layers, dim), dict(meta or {}))

    def apply(self, residuals: torch.Tensor, layers: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """Map residuals [n, d_in] of layers `layers` ([n] ids), or [L, ..., d_in] for all layers."""
        weight, bias = (maps[layers] for maps in self._maps_on(residuals.device, residuals.dtype))
        if residuals.dim() == 2 and weight.dim() == 3 and weight.shape[0] == residuals.shape[0]:
            return torch.einsum("noi,ni->no", weight, residuals) + bias
        shape = residuals.shape
        flat = residuals.reshape(shape[0], -1, shape[-1])
        out = torch.einsum("loi,lpi->lpo", weight, flat) + bias[:, None]
        return out.reshape(*shape[:-1], out.shape[-1])

    def _maps_on(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """All layers' weight and bias on `device` in `dtype`, copied there once (a real exit's
        checkpoint on a GPU would otherwise copy a d x d map from the CPU at every check); a map
        changed in place is copied again."""
        key = (device, dtype, id(self.weight), self.weight._version, id(self.bias), self.bias._version)
        placed = self._placed.get(key)
        if placed is None:
            placed = (self.weight.to(device, dtype), self.bias.to(device, dtype))
            self._placed = {key: placed}  # one placement kept: the device the model's results are on
        return placed

    def logits(self, lm: LoadedModel, residuals: torch.Tensor, layers=slice(None)) -> torch.Tensor:
        """Decoded logits of raw residuals (see `apply` for shapes)."""
        mapped = self.apply(residuals, layers)
        if self.kind == "tuned_lens":
            return lm.adapter.logit_lens(mapped)
        return lm.adapter.head(mapped)

    def save(self, path: Path) -> Path:
        """Write weights and metadata (float32 safetensors) to `path`, creating its folder; returns it."""
        path = Path(path)
        meta = {**{k: str(v) for k, v in self.meta.items()}, "kind": self.kind, "format": "spade-viz-affine-1"}
        tensors = {"weight": self.weight.float().contiguous(), "bias": self.bias.float().contiguous()}
        with atomic_output(path) as tmp:  # a crash leaves the old file, never half a new one
            save_file(tensors, str(tmp), metadata=meta)
        return path

    @classmethod
    def load(cls, path: Path, lm: LoadedModel | None = None) -> "AffineLens":
        """Read a saved lens; with `lm`, refuse it unless it was fitted on that exact model."""
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = dict(handle.metadata() or {})
                weight, bias = handle.get_tensor("weight"), handle.get_tensor("bias")
        except Exception as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise LensMismatch(f"{Path(path).name} is not a readable lens file: {first}") from err
        if meta.get("format") != "spade-viz-affine-1" or meta.get("kind") not in KINDS:
            raise LensMismatch(f"{Path(path).name} is not a spade-viz lens file")
        lens = cls(meta.pop("kind"), weight, bias, meta)
        lens.check_finite(f"{Path(path).name}: this file")
        if lm is not None:
            lens.check_matches(lm)
        return lens

    def check_finite(self, what: str | None = None) -> None:
        """Refuse (CalibrationMismatch) maps holding NaN or an infinity: they would decode every layer to
        nothing while looking like a lens. Checked once per change of the maps."""
        key = (id(self.weight), self.weight._version, id(self.bias), self.bias._version)
        if self._finite == key:
            return
        if self.weight.is_floating_point() and self.bias.is_floating_point() and not (
                torch.isfinite(self.weight).all() and torch.isfinite(self.bias).all()):
            raise LensMismatch(f"{what or 'this ' + self.kind.replace('_', ' ')} holds NaN or infinite "
                                      "weights: it is damaged; fit it again")
        self._finite = key

    def check_matches(self, lm: LoadedModel) -> None:
        """Refuse (LensMismatch) a lens fitted on another model: fingerprint and layer count must match."""
        want, have = self.meta.get("fingerprint"), lm.fingerprint()
        if want != have or self.num_layers != lm.num_layers:
            raise LensMismatch(
                f"this {self.kind.replace('_', ' ')} was fitted on model '{self.meta.get('model', '?')}' "
                f"(fingerprint {want}), not on the loaded '{lm.name}' ({have}): fit one for this model"
            )
        problem = self._shape_problem(lm)
        if problem:
            raise LensMismatch(f"this {self.kind.replace('_', ' ')} {problem} for '{lm.name}': the file is "
                                      "damaged or was not written for this model; fit it again")
        self.check_finite()

    def _shape_problem(self, lm: LoadedModel) -> str | None:
        """What is wrong with the maps' shapes for `lm` (weight [L, d_out, d_in], bias [L, d_out]), or None."""
        d_in = getattr(lm.model.config, "hidden_size", None)
        d_out = d_in if self.kind == "tuned_lens" else lm.adapter.lm_head.weight.shape[1]
        want_w, want_b = (lm.num_layers, d_out, d_in), (lm.num_layers, d_out)
        have_w, have_b = tuple(self.weight.shape), tuple(self.bias.shape)
        fits = len(have_w) == 3 and len(have_b) == 2 and have_w[0] == have_b[0] == lm.num_layers \
            and have_w[1] == have_b[1] and (d_out is None or have_w[1] == d_out) and (d_in is None or have_w[2] == d_in)
        if fits and self.weight.is_floating_point() and self.bias.is_floating_point():
            return None
        return (f"has maps of shape {list(have_w)} + {list(have_b)} ({self.weight.dtype}), not "
                f"{list(want_w)} + {list(want_b)}")


def lens_meta(lm: LoadedModel, **extra) -> dict[str, str]:
    """Metadata every saved lens carries, plus what the fitter adds (data hash, settings, scores)."""
    meta = {
        "model": lm.name,
        "fingerprint": lm.fingerprint(),
        "num_layers": str(lm.num_layers),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in extra.items()})
    return meta


def default_lens_path(lm: LoadedModel, kind: str) -> Path:
    """Where a lens of `kind` for this exact model is kept by default."""
    return cache_dir() / "lenses" / lm.fingerprint() / f"{kind}.safetensors"


def find_lens(lm: LoadedModel, kind: str) -> AffineLens | None:
    """The saved lens of `kind` for this model, if one exists."""
    path = default_lens_path(lm, kind)
    return AffineLens.load(path, lm) if path.exists() else None
