"""Model surgery: every change the engine makes to a model while it computes lives here.

One loaded model serves every browser session, each in its own thread, so a hook added for one
call would fire in every other thread's forward pass, and a `forward` replaced for one call would
be replaced for all. So nothing is added or removed per call. `install` wraps each decoder
block's `forward` once per model, under a lock, with a dispatcher that asks the *current call's
plan* what to do. The plan lives in a `ContextVar`: it is seen only by the thread that opened it,
and the context managers below set it for exactly one call and reset it on exit, exceptions
included. A forward with no plan open runs the plain blocks, bit for bit.

What a plan can do at block `i` (the residual before block i is h_i, after it h_{i+1}):

- `capturing`: read rows of h_0 (block 0's input) and of every block's output;
- `injecting`: replace rows of block i's output by given states (SPADE's continuation), and let
  the blocks below `skip_below` hand their input on unchanged (no work for rows that start above);
- `checkpoints`: look at h_l before block l; rows the check lets go leave the batch there (the
  blocks above run on the rows that stay), and the forward stops when none stays (early exit).

Blocks may live on different devices, or have their weights offloaded (accelerate's
`device_map`). accelerate wraps each block's `forward` with a hook that moves the block's inputs
(and offloaded weights) to where it computes; the dispatcher is installed after loading, so it
wraps that hook and sees every block call with the block's input as the previous block left it.
So the plan moves what it touches itself: injected states go to the device of the block's own
output, captured rows to the device of the `rows` asked for (one device, ready to stack), and
indices to the device of the tensor they index. Skipped blocks never reach accelerate's hook,
so their offloaded weights are not even loaded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch
from torch import nn

_PLAN: ContextVar[_Plan | None] = ContextVar("spade_viz_surgery_plan", default=None)
_INSTALL_LOCK = threading.Lock()


@dataclass
class _Plan:
    """What the blocks do for one call. Rows are batch rows; the call's last token is edited."""

    blocks: nn.ModuleList
    skip_below: int = 0
    inject: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # i -> (rows, states)
    capture: tuple[torch.Tensor, torch.Tensor | slice] | None = None  # (rows, cols) to read
    captured: list[torch.Tensor] = field(default_factory=list)
    checks: dict[int, Callable[[torch.Tensor, torch.Tensor], torch.Tensor | None]] = field(default_factory=dict)
    batch: int = 0  # batch rows the forward started with
    live: torch.Tensor | None = None  # after a check let rows go: the starting rows still running
    _indices: dict[torch.device, tuple] = field(default_factory=dict)  # capture indices per device

    def _take(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden[rows, cols], indexed where `hidden` is and moved to where `rows` is."""
        rows = self.capture[0]
        if hidden.device not in self._indices:
            self._indices[hidden.device] = tuple(i.to(hidden.device) if isinstance(i, torch.Tensor) else i
                                                 for i in self.capture)
        return hidden[self._indices[hidden.device]].to(rows.device)

    def run(self, index: int, block_forward, output_format: list, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        if index == 0 and self.capture is not None:
            self.captured.append(self._take(hidden))
        if not self.batch:
            self.batch = hidden.shape[0]
        if index in self.checks:
            running = self.live if self.live is not None else torch.arange(self.batch)
            stay = self.checks[index](hidden, running)
            if stay is not None and not bool(stay.all()):
                if not bool(stay.any()):
                    raise Stopped(index)
                stay = stay.to(hidden.device)
                self.live, hidden = running[stay.cpu()], hidden[stay]
        if self.live is not None:
            args, kwargs = self._narrowed(hidden, args, kwargs)
        if index < self.skip_below:
            out = _as_block_output(hidden, output_format)
        else:
            out = block_forward(*args, **kwargs)
        if index in self.inject:
            rows, states = self.inject[index]
            new = _hidden_of(out).clone()
            rows, states = rows.to(new.device), states.to(new.device, new.dtype)
            if states.dim() == 2:  # [rows, d]: the last token of each row
                new[rows, -1] = states
            else:  # [rows, tokens, d]: every token of each row
                new[rows] = states
            out = _as_block_output(new, output_format, like=out)
        if self.capture is not None:
            self.captured.append(self._take(_hidden_of(out)))
        return out


    def _narrowed(self, hidden: torch.Tensor, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """The block's arguments for the rows still running: `hidden` as its input, and every
        per-row tensor the model built for the whole batch (masks, positions, rotary tables: at
        least 2-D and `batch` long) cut to the live rows. Broadcast ones (first dimension 1) and
        1-D ones (cache positions) are shared by all rows and stay as they are."""
        def cut(value):
            if isinstance(value, torch.Tensor) and value.dim() >= 2 and value.shape[0] == self.batch:
                return value.index_select(0, self.live.to(value.device))
            if isinstance(value, tuple | list):
                return type(value)(cut(v) for v in value)
            return value

        if args:
            return (hidden, *(cut(a) for a in args[1:])), {k: cut(v) for k, v in kwargs.items()}
        return (), {k: (hidden if k == "hidden_states" else cut(v)) for k, v in kwargs.items()}


class Stopped(Exception):
    """Raised inside a forward when a checkpoint lets every row go: no block above it runs."""

    def __init__(self, layer: int):
        super().__init__(f"every row left at layer {layer}")
        self.layer = layer


def _hidden_of(output):
    return output[0] if isinstance(output, tuple) else output


def _as_block_output(hidden: torch.Tensor, output_format: list, like=None):
    """`hidden` in the form the block returns: a tensor (transformers 5) or a tuple led by it."""
    if like is not None:
        return (hidden, *like[1:]) if isinstance(like, tuple) else hidden
    length = output_format[0] if output_format else 0
    return (hidden, *([None] * (length - 1))) if length else hidden


def _dispatcher(owner: nn.ModuleList, index: int, block_forward):
    """The block's forward, asking the current call's plan for this model (if any) what to do."""
    output_format: list[int] = []  # tuple length of the block's real output (0: a tensor), once seen

    def forward(*args, **kwargs):
        plan = _PLAN.get()
        if plan is None or plan.blocks is not owner:
            out = block_forward(*args, **kwargs)
        else:
            out = plan.run(index, block_forward, output_format, args, kwargs)
        if not output_format:
            output_format.append(len(out) if isinstance(out, tuple) else 0)
        return out

    forward.spade_viz_dispatcher = True
    return forward


def install(blocks: nn.ModuleList) -> None:
    """Wrap each block's forward with the plan dispatcher, once per block (idempotent, thread-safe)."""
    with _INSTALL_LOCK:
        for index, block in enumerate(blocks):
            if not getattr(block.forward, "spade_viz_dispatcher", False):
                block.forward = _dispatcher(blocks, index, block.forward)


@contextmanager
def _plan(plan: _Plan) -> Iterator[_Plan]:
    if _PLAN.get() is not None:
        raise RuntimeError("a model-surgery plan is already open in this call")
    if not all(getattr(block.forward, "spade_viz_dispatcher", False) for block in plan.blocks):
        install(plan.blocks)
    token = _PLAN.set(plan)
    try:
        yield plan
    finally:
        _PLAN.reset(token)


@contextmanager
def capturing(blocks: nn.ModuleList, rows: torch.Tensor, cols: torch.Tensor | slice = slice(None)
              ) -> Iterator[list[torch.Tensor]]:
    """Within, a forward appends h_0[rows, cols] and then each block's output [rows, cols] to the
    yielded list: L+1 entries, the last before the final norm, all on the device of `rows`."""
    with _plan(_Plan(blocks, capture=(rows, cols))) as plan:
        yield plan.captured


@contextmanager
def injecting(blocks: nn.ModuleList, states: torch.Tensor, start_layers: torch.Tensor, skip_below: int = 0
              ) -> Iterator[None]:
    """Within, batch row r leaves block start_layers[r]-1 holding states[r] ([R, d]: as its last
    token; [R, T, d]: as all its tokens), and blocks 0..skip_below-1 hand their input on unchanged
    (exact for rows that start at or above `skip_below`: their state is replaced after those
    blocks anyway). Start layer 0 rows are left to the model's own embedding. `states` may be on
    any device: each row moves to its block's when it is injected."""
    inject = {}
    start_layers = start_layers.cpu()
    for layer in sorted(set(start_layers.tolist()) - {0}):
        rows = (start_layers == layer).nonzero().squeeze(-1).to(states.device)
        inject[layer - 1] = (rows, states[rows])
    with _plan(_Plan(blocks, skip_below=skip_below, inject=inject)):
        yield


@contextmanager
def checkpoints(blocks: nn.ModuleList, checks: dict[int, Callable[[torch.Tensor, torch.Tensor], torch.Tensor | None]]
                ) -> Iterator[_Plan]:
    """Within, `checks[l](h_l, rows)` runs before block l on the rows still running (`rows`: their
    indices in the starting batch, on the CPU) and returns which of them stay (booleans), or None for
    all. The rows let go leave the batch: the blocks above, and the model's output, see only the
    rows that stay, which the yielded plan's `live` lists afterwards (None: every row stayed). When
    no row stays the forward stops there with `Stopped`. A batch of one prompt is the one-prompt
    exit: it finishes, or stops at its first confident checkpoint."""
    with _plan(_Plan(blocks, checks=dict(checks))) as plan:
        yield plan
