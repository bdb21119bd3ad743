"""One registry for architecture differences.

Every lens needs the same three things from a causal LM: its list of decoder blocks
(to inject states), the final norm (and OPT's `project_out`) that turns a residual
into what the unembedding expects, and the unembedding itself with any logit quirk
(Gemma-2/3 final soft-capping). An `ArchSpec` names where these live, per
`config.model_type`; `Adapter` binds a spec to a loaded model and validates it.

A model spread by accelerate (`device_map`) computes each module on its own device. The adapter
knows where the input embedding and the unembedding compute (`input_device`, `output_device`)
and moves what it is given to the module it runs: final-normed states always come back on
`output_device`, whatever block they came from (`models.surgery` moves states between blocks).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from accelerate.utils import align_module_device
from torch import nn

from ..errors import UnsupportedArchitectureError
from . import surgery


@dataclass(frozen=True)
class ArchSpec:
    """Dotted attribute paths inside the `...ForCausalLM` module."""

    blocks: str
    final_norm: str | None
    project_out: str | None = None


_DECODER_ONLY = ArchSpec(blocks="model.layers", final_norm="model.norm")

ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": _DECODER_ONLY,
    "mistral": _DECODER_ONLY,
    "qwen2": _DECODER_ONLY,
    "qwen3": _DECODER_ONLY,
    "gemma": _DECODER_ONLY,
    "gemma2": _DECODER_ONLY,
    "gemma3_text": _DECODER_ONLY,
    "phi3": _DECODER_ONLY,
    "gpt2": ArchSpec(blocks="transformer.h", final_norm="transformer.ln_f"),
    "gpt_neox": ArchSpec(blocks="gpt_neox.layers", final_norm="gpt_neox.final_layer_norm"),
    "opt": ArchSpec(
        blocks="model.decoder.layers",
        final_norm="model.decoder.final_layer_norm",
        project_out="model.decoder.project_out",
    ),
}

# Tried in order for a model_type we do not list; the result is validated before use.
_FALLBACK_BASES = ("model", "transformer", "gpt_neox", "model.decoder", "backbone")
_FALLBACK_BLOCKS = ("layers", "h", "blocks")
_FALLBACK_NORMS = ("norm", "ln_f", "final_layer_norm", "final_norm", "norm_f")


def find_module(module: nn.Module, path: str | None) -> nn.Module | None:
    """The submodule at a dotted path, or None."""
    if path is None:
        return None
    for name in path.split("."):
        module = getattr(module, name, None)
        if module is None:
            return None
    return module


def execution_device(model: nn.Module, module: nn.Module) -> torch.device:
    """Where `module` computes: its entry in accelerate's device map (weights offloaded to the CPU or
    disk compute on the main device, as `accelerate.dispatch_model` arranges), else where its weights are."""
    mapping = getattr(model, "hf_device_map", None)
    if not mapping:
        param = next(module.parameters(), None)
        return param.device if param is not None else next(model.parameters()).device
    name = next(n for n, m in model.named_modules() if m is module)
    where = mapping[max((k for k in mapping if k == "" or name == k or name.startswith(k + ".")), key=len)]
    main = getattr(getattr(model, "_hf_hook", None), "execution_device", None)
    main = torch.device("cuda", main) if isinstance(main, int) else torch.device(main or "cpu")
    offloaded = ("disk",) if main.type in ("cpu", "mps") else ("cpu", "disk")
    if where in offloaded:
        return main
    return torch.device("cuda", where) if isinstance(where, int) else torch.device(where)


def spec_for(model: nn.Module) -> ArchSpec | None:
    """The registered spec of the model's `model_type`, else one guessed from common layouts (not
    yet validated: `adapter_for` does that), else None."""
    known = ARCHITECTURES.get(getattr(model.config, "model_type", ""))
    if known is not None:
        return known
    for base in _FALLBACK_BASES:
        for blocks in _FALLBACK_BLOCKS:
            found = find_module(model, f"{base}.{blocks}")
            if isinstance(found, nn.ModuleList) and len(found) > 0:
                norm = next(
                    (f"{base}.{n}" for n in _FALLBACK_NORMS if find_module(model, f"{base}.{n}") is not None),
                    None,
                )
                return ArchSpec(blocks=f"{base}.{blocks}", final_norm=norm)
    return None


class Adapter:
    """A model's blocks, final norm and unembedding, found through its `ArchSpec`."""

    def __init__(self, model: nn.Module, spec: ArchSpec):
        self.model = model
        self.spec = spec
        self.blocks: nn.ModuleList = find_module(model, spec.blocks)
        self.final_norm = find_module(model, spec.final_norm)
        self.project_out = find_module(model, spec.project_out)
        self.lm_head = model.get_output_embeddings()
        self.softcap = getattr(model.config, "final_logit_softcapping", None)
        if self.blocks is None or self.lm_head is None:
            raise UnsupportedArchitectureError(
                f"unsupported architecture '{model.config.model_type}': no decoder blocks or output embedding found"
            )
        self.input_device = execution_device(model, model.get_input_embeddings())
        self.output_device = execution_device(model, self.lm_head)
        self._final = [(m, execution_device(model, m)) for m in (self.final_norm, self.project_out) if m is not None]
        surgery.install(self.blocks)

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def head(self, final_hidden: torch.Tensor, rows: torch.Tensor | None = None,
             out: torch.Tensor | None = None) -> torch.Tensor:
        """Unembed a state that has already been through the final norm (hidden_states[L]).

        `rows`: only these vocabulary rows (an answer's choices), reading C rows of the unembedding
        instead of all V (an offloaded unembedding is brought in for the call). `out`: a tensor of the
        logits' shape and dtype to write them into (a caller's reused buffer), used where the
        unembedding is a plain resident bias-free linear layer (the same product as calling it).
        Logits are on `output_device`."""
        final_hidden = final_hidden.to(self.output_device)
        if rows is None and out is not None and self._plain_head(final_hidden.device):
            logits = torch.matmul(final_hidden, self.lm_head.weight.t(), out=out)
        elif rows is None:
            logits = self.lm_head(final_hidden)
        else:
            with align_module_device(self.lm_head):
                weight, bias = self.lm_head.weight, getattr(self.lm_head, "bias", None)
                rows = rows.to(weight.device)
                logits = torch.nn.functional.linear(final_hidden, weight[rows], None if bias is None else bias[rows])
        if self.softcap:
            cap = self.softcap
            logits = logits.div_(cap).tanh_().mul_(cap) if logits is out else torch.tanh(logits / cap) * cap
        return logits

    def _plain_head(self, device: torch.device) -> bool:
        head = self.lm_head
        return (type(head) is nn.Linear and head.bias is None and not hasattr(head, "_hf_hook")
                and head.weight.device == device)

    def finalize(self, residual: torch.Tensor) -> torch.Tensor:
        """What the model does between its last block and the unembedding; on `output_device`."""
        for module, device in self._final:
            residual = module(residual.to(device))
        return residual.to(self.output_device)

    def logit_lens(self, residual: torch.Tensor) -> torch.Tensor:
        """Logits of a raw residual read as if it were the last block's output: finalize, then head."""
        return self.head(self.finalize(residual))


def _validate(adapter: Adapter) -> None:
    """Check on a 2-token probe that head(hs[L]) is the model's logits and finalize(last block) is hs[L]."""
    model = adapter.model
    device = adapter.output_device  # a spread model's own forward returns its outputs where input_ids were
    ids = torch.tensor([[1, 2]], device=device) % model.config.vocab_size
    with torch.no_grad(), surgery.capturing(adapter.blocks, torch.tensor([0], device=device)) as captured:
        out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
    final = out.hidden_states[-1]
    tol = 1e-3 if model.dtype == torch.float32 else 5e-2
    with torch.no_grad():
        same_logits = torch.allclose(adapter.head(final).float(), out.logits.float(), atol=tol, rtol=tol)
        same_final = torch.allclose(adapter.finalize(captured[-1]).float(), final.float(), atol=tol, rtol=tol)
    if len(out.hidden_states) != adapter.num_layers + 1 or not (same_logits and same_final):
        raise UnsupportedArchitectureError(
            f"unsupported architecture '{model.config.model_type}': its layers could not be decoded faithfully"
        )


def parameter_counts(model: nn.Module) -> dict[str, float]:
    """What the early-exit cost model charges, counted on a causal LM (real weights or `meta`):
    one decoder block (the mean over blocks), one unembedding, one linear-SPADE map, and the
    vocabulary size (to charge C of V rows for choice tasks)."""
    spec = spec_for(model)
    blocks = find_module(model, spec.blocks) if spec else None
    head = model.get_output_embeddings()
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0 or head is None:
        raise UnsupportedArchitectureError("cannot count the parameters of this model's blocks")
    d_final = head.weight.shape[1]
    d_model = getattr(model.config, "hidden_size", None) or d_final
    return {
        "block_params": float(sum(p.numel() for p in blocks.parameters()) / len(blocks)),
        "head_params": float(head.weight.numel()),
        "map_params": float(d_final * d_model + d_final),
        "vocab_size": float(head.weight.shape[0]),
    }


def adapter_for(model: nn.Module) -> Adapter:
    """The validated adapter for a loaded causal LM, or a clear UnsupportedArchitectureError."""
    model_type = getattr(model.config, "model_type", "?")
    spec = spec_for(model)
    if spec is None:
        raise UnsupportedArchitectureError(f"unsupported architecture '{model_type}': no decoder blocks found")
    adapter = Adapter(model, spec)
    _validate(adapter)
    return adapter
