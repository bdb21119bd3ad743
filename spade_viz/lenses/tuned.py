"""Tuned lens (Belrose et al. 2023): a per-layer affine translator, then the logit lens.

For every layer l < L a map `W_l h + b_l` (initialised to the identity) is trained so that the
logit lens of the translated residual matches the model's final next-token distribution:
minimise KL(final || lens) averaged over the positions of a training text. The maps live in
the shared `AffineLens` (kind "tuned_lens"), saved as safetensors beside linear SPADE's.

Training text, offline: either text the model itself writes from `SEED_PROMPTS` (varied
prose, code, dialogue, lists, arithmetic, few-shot formats; by default 32 prompts continued by
96 sampled tokens each, seed 0: about 3,300 positions, of which 1 text in 5 is held out), or a
user-supplied text cut into windows of at most `window` tokens.

How it trains, cheaply enough for a CPU: the model runs once over the text (no gradient); the
raw residuals of layers 0..L-1 and the final-normed states are kept. Each step draws a batch of
positions and updates all L translators at once with Adam on the summed per-layer mean KL. The
unembedding (the costly part: vocabulary x width per row) runs in bfloat16 where that is
faster on this machine (a short benchmark decides); evaluation can run in float32 (`precise`).
The `<s>` position is left out of training and evaluation: its state is the same in every text
and has an outsized norm in most models (an attention sink), so it would only add one repeated,
atypical example.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import StoppingCriteriaList

from ..engine import read_rows
from ..errors import InputError, check_int, check_number, check_text
from ..models.loading import LoadedModel, cache_dir, operation
from ..progress import Progress, no_progress, within
from .affine import AffineLens, lens_meta

DEFAULT_PROMPTS = 32
DEFAULT_NEW_TOKENS = 96
DEFAULT_STEPS = 150
DEFAULT_BATCH = 32  # positions per step; every step trains all layers on them (L x 32 rows)
DEFAULT_LR = 2e-3
DEFAULT_WINDOW = 256  # tokens per window when cutting a user text (with the start token)
MAX_POSITIONS = 20_000  # training positions kept at most (see `position_budget`)
HELDOUT_FRACTION = 0.2
_SAMPLING = dict(temperature=0.9, top_p=0.95)  # how the model writes its training text

SEED_PROMPTS: tuple[str, ...] = (
    "The history of the Roman Empire begins",
    "In a small village at the edge of the forest, there lived",
    "Photosynthesis is the process by which",
    "Here is a simple recipe for pancakes:",
    "def fibonacci(n):\n",
    "import numpy as np\n\n# Compute the mean of",
    "Dear hiring manager,\n\nI am writing to apply for",
    "Q: What causes the seasons on Earth?\nA:",
    "The three most important things to know about volcanoes are",
    "Once upon a time, a robot named",
    "User: Can you explain how a rainbow forms?\nAssistant:",
    "12 + 7 = 19\n35 - 8 = 27\n6 * 4 =",
    "List of fruits:\n1. Apple\n2.",
    "Monday, Tuesday,",
    "Dog: bark\nCat: meow\nCow:",
    "happy - joyful\nbig - large\nfast -",
    "The weather today is",
    "Breaking news: scientists have discovered",
    "<html>\n<head>\n<title>",
    "SELECT name, age FROM users WHERE",
    "Chapter 1\n\nThe train was late again, and",
    "Tips for learning a new language:\n-",
    "The capital of Australia is",
    "Water boils at 100 degrees Celsius, which",
    "In mathematics, a prime number is",
    "She opened the letter and read:",
    "Step 1: Preheat the oven to",
    "The best way to stay healthy is",
    "Translate to French: good morning ->",
    "My favourite book is",
    "To install the package, run",
    "The meeting has been moved to",
    "Is the ocean salty? Yes.\nIs fire cold?",
    "Paris is to France as Tokyo is to",
    "The stock market fell sharply on",
    "A haiku about autumn:\n",
    "Elephants are the largest land animals and",
    "Error: file not found. Please check",
    "1, 2, 3, 4,",
    "The professor began the lecture by saying",
)


# --------------------------------------------------------------------------------------------
# Training text
# --------------------------------------------------------------------------------------------


class _EveryToken:
    """A stopping criterion that never stops: it reports generation progress per token."""

    def __init__(self, total: int, progress: Progress | None):
        self.total, self.done, self.progress = total, 0, progress

    def __call__(self, input_ids, scores, **kwargs):
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total, f"writing training text: token {self.done}/{self.total}")
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def training_texts(
    lm: LoadedModel,
    n_prompts: int = DEFAULT_PROMPTS,
    tokens_each: int = DEFAULT_NEW_TOKENS,
    seed: int = 0,
    progress: Progress | None = None,
    batch_size: int = 32,
    cache: bool = True,
) -> list[str]:
    """Text the model writes itself: `n_prompts` seed prompts (cycled from `SEED_PROMPTS`), each
    continued by exactly `tokens_each` sampled tokens (temperature 0.9, top-p 0.95, fixed seed).

    Returns seed + continuation per prompt. The global random state is left untouched. With
    `cache`, the texts are kept in the user cache per model and settings (retraining with other
    steps or learning rate then skips the generation).
    """
    if n_prompts < 1 or tokens_each < 1:
        raise InputError("training text needs at least one prompt and one generated token per prompt")
    path = _texts_path(lm, n_prompts, tokens_each, seed)
    if cache and path.is_file():
        try:
            texts = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(texts, list) and len(texts) == n_prompts and all(isinstance(t, str) for t in texts):
                return texts
        except (OSError, ValueError):
            pass
    prompts = [SEED_PROMPTS[i % len(SEED_PROMPTS)] for i in range(n_prompts)]
    tok = lm.tokenizer
    pad = next((t for t in (tok.pad_token_id, tok.eos_token_id, lm.bos_id) if t is not None), 0)
    texts: list[str] = []
    batches = [prompts[i : i + batch_size] for i in range(0, len(prompts), batch_size)]
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for number, batch in enumerate(batches):
            encoded = [lm.encode(p) for p in batch]
            width = max(map(len, encoded))
            ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded], device=lm.device)
            mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded], device=lm.device)

            def report(done, total, message, number=number):
                if progress is not None:
                    progress(number * total + done, len(batches) * total, message)

            out = lm.model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=tokens_each, min_new_tokens=tokens_each,
                do_sample=True, top_k=0, pad_token_id=pad, **_SAMPLING,
                stopping_criteria=StoppingCriteriaList([_EveryToken(tokens_each, report)]),
            )
            for prompt, row in zip(batch, out[:, width:]):
                texts.append(prompt + tok.decode(row.tolist(), skip_special_tokens=True))
    if cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
            tmp.replace(path)
        except OSError:
            pass  # a cache that cannot be written only costs time
    return texts



def _texts_path(lm: LoadedModel, n_prompts: int, tokens_each: int, seed: int) -> Path:
    """Where self-written training text for these settings is cached (keyed by the seed prompts too; the
    folder keeps its old name, so texts cached before stay found)."""
    recipe = hashlib.sha256(json.dumps([SEED_PROMPTS, _SAMPLING]).encode()).hexdigest()[:10]
    return cache_dir() / "calibration" / lm.fingerprint() / f"{n_prompts}x{tokens_each}-seed{seed}-{recipe}.json"


def read_calibration_text(data: bytes | str, name: str = "the calibration text") -> list[str]:
    """The paragraphs (split at blank lines) of a calibration text file, decoded as UTF-8 (a BOM is
    dropped). Refused with where and why: UTF-16, undecodable bytes, NUL, and text of which more than
    1% are control characters or U+FFFD (binary, or bytes decoded leniently)."""
    if isinstance(data, (bytes, bytearray)):
        if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            raise InputError(f"{name} is UTF-16 text, not UTF-8: save it as UTF-8")
        try:
            data = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise InputError(f"{name} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}): "
                             "save it as UTF-8") from None
    text = check_text(name, data)
    if "\x00" in text:
        raise InputError(f"{name} holds NUL characters: it is binary or UTF-16, not UTF-8 text; save it as UTF-8")
    odd = sum(text.count(c) for c in _ODD if c in text)
    if odd > max(2, len(text) // 100):
        raise InputError(f"{name} does not look like text: {odd:,} of its {len(text):,} characters are control "
                         "characters or undecodable bytes (binary, or not UTF-8?); save it as UTF-8 text")
    paragraphs = [part for part in text.split("\n\n") if part.strip()]
    if not paragraphs:
        raise InputError(f"{name} is empty: give some text to train the tuned lens on")
    return paragraphs


_ODD = {chr(c) for c in range(32)} - set("\t\n\r\f\v") | {"\x7f", "\ufffd"}


def text_windows(lm: LoadedModel, texts: Sequence[str], window: int = DEFAULT_WINDOW) -> list[list[int]]:
    """Token windows `[<s>] + up to window-1 tokens` cut from each text, in order (blank texts skipped)."""
    window = max(2, min(window, lm.max_positions or window))
    out = []
    for text in texts:
        if not text.strip():
            continue
        ids = lm.encode(text)[1:]
        for start in range(0, len(ids), window - 1):
            chunk = ids[start : start + window - 1]
            if chunk:
                out.append([lm.bos_id] + chunk)
    if not out:
        raise InputError("the training text is empty: give some text to train the tuned lens on")
    return out


def split_heldout(windows: list[list[int]], fraction: float = HELDOUT_FRACTION) -> tuple[list, list]:
    """(train, held-out): every k-th window is held out (k = round(1/fraction)), at least one of each
    when there are two or more windows; a single window is split at its token 1 - fraction."""
    if fraction <= 0:
        return windows, []
    if len(windows) == 1:
        ids = windows[0]
        cut = max(2, int(round(len(ids) * (1 - fraction))))
        return [ids[:cut]], [[ids[0]] + ids[cut:]] if cut < len(ids) else []
    every = max(2, int(round(1 / fraction)))
    held_out = {i for i in range(len(windows)) if i % every == every - 1} or {len(windows) - 1}
    train = [w for i, w in enumerate(windows) if i not in held_out]
    held = [w for i, w in enumerate(windows) if i in held_out]
    return train, held


# --------------------------------------------------------------------------------------------
# Residuals of a text, and the decoders applied to them
# --------------------------------------------------------------------------------------------


@dataclass
class Activations:
    """Raw residuals [L, N, d] (layers 0..L-1) and final-normed states [N, d'] of N positions."""

    residuals: torch.Tensor
    final: torch.Tensor

    @property
    def num_positions(self) -> int:
        return self.final.shape[0]


def position_budget(lm: LoadedModel, budget_bytes: float = 2 * 1024**3) -> int:
    """How many training positions to keep: their residuals (L x d floats each) within ~2 GiB."""
    width = lm.model.get_input_embeddings().weight.shape[-1]
    return int(max(256, min(MAX_POSITIONS, budget_bytes // (4 * lm.num_layers * width))))


def collect(lm: LoadedModel, windows: Sequence[Sequence[int]], progress: Progress | None = None,
            max_positions: int | None = None, batch_windows: int = 8) -> Activations:
    """Run the model over the windows (no gradient, a few per padded batch) and keep every position
    except `<s>`, up to `max_positions` (default: `position_budget`)."""
    limit = position_budget(lm) if max_positions is None else max_positions
    kept_windows, total = [], 0
    for ids in windows:
        if total >= limit:
            break
        take = min(len(ids) - 1, limit - total)
        if take > 0:
            kept_windows.append(list(ids[: take + 1]))
            total += take
    if not total:
        raise InputError("the training text has no token after the start token")
    residuals, finals = [], []
    for start in range(0, len(kept_windows), batch_windows):
        batch = kept_windows[start : start + batch_windows]
        res, final = read_rows(lm, batch, [range(1, len(ids)) for ids in batch])  # [n, L, d], [n, d']
        residuals.append(res.float().transpose(0, 1).cpu())
        finals.append(final.float().cpu())
        if progress is not None:
            done = min(len(kept_windows), start + batch_windows)
            progress(done, len(kept_windows), f"reading the text through the model: window {done}/{len(kept_windows)}")
    return Activations(torch.cat(residuals, dim=1), torch.cat(finals))


_FAST_DTYPE: dict[str, torch.dtype] = {}


def fast_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 where the unembedding matmul runs faster in it than in float32, else float32."""
    key = str(device)
    if key not in _FAST_DTYPE:
        if device.type == "cuda":
            _FAST_DTYPE[key] = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        elif device.type != "cpu":
            _FAST_DTYPE[key] = torch.float32
        else:
            timings = {}
            a, b = torch.randn(256, 512), torch.randn(4096, 512)
            for dtype in (torch.float32, torch.bfloat16):
                x, y = a.to(dtype), b.to(dtype)
                x @ y.T
                start = time.perf_counter()
                for _ in range(3):
                    x @ y.T
                timings[dtype] = time.perf_counter() - start
            faster = timings[torch.bfloat16] < 0.7 * timings[torch.float32]
            _FAST_DTYPE[key] = torch.bfloat16 if faster else torch.float32
    return _FAST_DTYPE[key]


def _autocast(lm: LoadedModel, precise: bool):
    dtype = fast_dtype(lm.device)
    if precise or dtype == torch.float32 or lm.dtype != torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=lm.device.type, dtype=dtype)


class _KLToFinal(torch.autograd.Function):
    """KL(final || softmax(logits)) per row, fused: forward and backward each read the [rows x vocab]
    logits about three times (autograd's log_softmax chain reads and writes them about twice as often).

    KL = sum p log p - sum p z + logsumexp(z); d KL / d z = softmax(z) - p. `logits` may be bf16
    (the result and the gradient are computed in float32); `final_logprobs` broadcasts over rows.
    """

    @staticmethod
    def forward(ctx, logits, final_logprobs):
        z = logits.float()
        lse = torch.logsumexp(z, dim=-1)
        p = final_logprobs.exp()
        kl = (p * final_logprobs).sum(-1) - torch.linalg.vecdot(z, p) + lse
        ctx.save_for_backward(logits, lse, p)
        return kl

    @staticmethod
    def backward(ctx, grad):
        logits, lse, p = ctx.saved_tensors
        z = logits.float().sub_(lse[..., None]).exp_().sub_(p).mul_(grad[..., None])
        return z.to(logits.dtype), None


def _kl(final_logprobs: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(final || softmax(logits)) per row, in nats; final_logprobs broadcast over leading dims."""
    return _KLToFinal.apply(logits, final_logprobs.float())


def heldout_kl(
    lm: LoadedModel,
    lens: AffineLens | None,
    texts: Sequence[str] | Activations,
    precise: bool = False,
    batch_rows: int = 512,
    progress: Progress | None = None,
) -> dict[str, list[float]]:
    """Per-layer mean KL(final || decoder) in nats over the positions of `texts` (without `<s>`):
    {"logit_lens": [L+1 values], "tuned_lens": [L+1 values] (when `lens` is given)}. Layer L is the
    model's own output (0 for both). `precise` decodes in float32 (slower on CPUs with bf16 units)."""
    acts = texts if isinstance(texts, Activations) else collect(lm, text_windows(lm, texts))
    layers, count = lm.num_layers, acts.num_positions
    sums = {"logit_lens": torch.zeros(layers + 1, dtype=torch.float64)}
    if lens is not None:
        lens.check_matches(lm)
        sums["tuned_lens"] = torch.zeros(layers + 1, dtype=torch.float64)
    per_batch = max(1, batch_rows // layers)
    starts = range(0, count, per_batch)
    with torch.no_grad():
        for number, start in enumerate(starts):
            final = acts.final[start : start + per_batch].to(lm.device, lm.dtype)
            final_logprobs = torch.log_softmax(lm.adapter.head(final).float(), dim=-1)
            residual = acts.residuals[:, start : start + per_batch].to(lm.device, lm.dtype)
            with _autocast(lm, precise):
                decoded = {"logit_lens": lm.adapter.logit_lens(residual)}
                if lens is not None:
                    decoded["tuned_lens"] = lens.logits(lm, residual)
            for name, logits in decoded.items():
                sums[name][:layers] += _kl(final_logprobs, logits).sum(-1).double().cpu()
            if progress is not None:
                progress(number + 1, len(starts), "measuring held-out KL")
    return {name: (total / count).tolist() for name, total in sums.items()}


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


@dataclass
class TunedLensReport:
    """What a training run did and how well the lens fits held-out text."""

    source: str
    train_positions: int
    heldout_positions: int
    steps: int
    batch: int
    lr: float
    seconds: float
    dtype: str
    loss: list[float] = field(default_factory=list)  # training loss (mean KL over layers) per step
    heldout: dict[str, list[float]] = field(default_factory=dict)  # decoder -> per-layer mean KL

    def table(self) -> str:
        """Per-layer held-out KL, logit lens vs tuned lens, as aligned text."""
        if not self.heldout:
            return "no held-out text: nothing measured"
        logit, tuned = self.heldout["logit_lens"], self.heldout["tuned_lens"]
        lines = [f"held-out KL(final || decoder), nats, mean over {self.heldout_positions} positions",
                 f"{'layer':>5}  {'logit lens':>10}  {'tuned lens':>10}"]
        lines += [f"{layer:>5}  {a:10.3f}  {b:10.3f}" for layer, (a, b) in enumerate(zip(logit, tuned))]
        lines.append(f"{'mean':>5}  {sum(logit[:-1]) / (len(logit) - 1):10.3f}  "
                     f"{sum(tuned[:-1]) / (len(tuned) - 1):10.3f}  (layers 0..L-1)")
        return "\n".join(lines)

    def summary(self) -> str:
        """One line: what the lens was trained on, how long, and with which unembedding precision."""
        return (f"tuned lens trained on {self.source}: {self.train_positions} positions, {self.steps} steps of "
                f"{self.batch} positions x all layers, {self.seconds:.0f} s ({self.dtype} unembedding)")


def _layer_scales(residuals: torch.Tensor) -> torch.Tensor:
    """RMS of each layer's residual elements [L]: the bias is learnt in these units."""
    return residuals.pow(2).mean(dim=(1, 2)).sqrt().clamp_min(1e-6)


@operation
def train_tuned_lens(
    lm: LoadedModel,
    texts: Sequence[str] | None = None,
    *,
    steps: int = DEFAULT_STEPS,
    lr: float = DEFAULT_LR,
    batch: int = DEFAULT_BATCH,
    n_prompts: int = DEFAULT_PROMPTS,
    tokens_each: int = DEFAULT_NEW_TOKENS,
    window: int = DEFAULT_WINDOW,
    heldout_fraction: float = HELDOUT_FRACTION,
    seed: int = 0,
    source: str | None = None,
    progress: Progress | None = None,
) -> tuple[AffineLens, TunedLensReport]:
    """Train a tuned lens for `lm`; returns (lens, report). Nothing is saved: call
    `lens.save(default_lens_path(lm, "tuned_lens"))` to make it the model's tuned lens.

    `texts`: training text (e.g. a user file's contents); None = `training_texts(lm,
    n_prompts, tokens_each, seed)`. `progress(share, 1, message)` is called throughout.
    """
    if texts is not None:
        if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
            raise InputError(f"texts must be a list of str (paragraphs), not {type(texts).__name__}: wrap one "
                             "text in a list, or read a file with read_calibration_text")
        for number, text in enumerate(texts):  # the content is checked where a file is read: read_calibration_text
            check_text(f"calibration text {number + 1}", text)
    steps = check_int("steps", steps, 1, 100_000)
    lr = check_number("lr", lr, 0, 1, low_open=True)
    batch = check_int("batch", batch, 1, 1_000_000)
    window = check_int("window", window, 2, 1_000_000)
    heldout_fraction = check_number("heldout_fraction", heldout_fraction, 0, 1, high_open=True)
    started = time.perf_counter()
    report_to = progress or no_progress
    generated = texts is None
    phases = {"text": 0.25 if generated else 0.0, "read": 0.05, "train": 0.6 if generated else 0.85, "eval": 0.1}
    done = 0.0

    def phase(name):
        return within(report_to, done, phases[name])

    if generated:
        texts = training_texts(lm, n_prompts, tokens_each, seed, progress=phase("text"))
        source = source or f"{n_prompts} self-generated texts ({tokens_each} sampled tokens each, seed {seed})"
    done += phases["text"]
    source = source or f"{len(texts)} given text(s)"
    windows = text_windows(lm, texts, window)
    train_windows, held_windows = split_heldout(windows, heldout_fraction)
    data_hash = hashlib.sha256(json.dumps(windows).encode()).hexdigest()[:16]
    acts = collect(lm, train_windows, progress=phase("read"))
    done += phases["read"]

    layers, count, dim = lm.num_layers, acts.num_positions, acts.residuals.shape[-1]
    residuals = acts.residuals.to(lm.device)
    scales = _layer_scales(residuals)[:, None]  # [L, 1]
    delta = torch.zeros(layers, dim, dim, device=lm.device, requires_grad=True)  # W = I + delta
    shift = torch.zeros(layers, dim, device=lm.device, requires_grad=True)  # b = scale * shift
    optimizer = torch.optim.Adam([delta, shift], lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 10) * 0.5 * (1 + math.cos(math.pi * step / max(1, steps)))
    )
    generator = torch.Generator().manual_seed(seed)
    train_report = phase("train")
    losses = []
    batch = max(1, min(batch, count))
    for step in range(steps):
        idx = torch.randperm(count, generator=generator)[:batch]  # indexes the kept states on the CPU
        with torch.no_grad():
            final_logprobs = torch.log_softmax(lm.adapter.head(acts.final[idx].to(lm.device, lm.dtype)).float(), -1)
        h = residuals[:, idx.to(lm.device)]  # [L, B, d]
        mapped = h + torch.einsum("loi,lbi->lbo", delta, h) + (scales * shift)[:, None]
        with _autocast(lm, precise=False):
            logits = lm.adapter.logit_lens(mapped.to(lm.dtype))
        loss = _kl(final_logprobs, logits).mean(-1).sum()  # each layer's own mean KL; layers are independent
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item() / layers)
        train_report(step + 1, steps, f"training: step {step + 1}/{steps}, mean KL {losses[-1]:.3f} nats")
    done += phases["train"]

    weight = (torch.eye(dim, device=lm.device) + delta.detach()).cpu()
    bias = (scales * shift.detach()).cpu()
    meta = lens_meta(lm, source=source, data_hash=data_hash, steps=str(steps), lr=str(lr), batch=str(batch),
                     train_positions=str(count))
    lens = AffineLens("tuned_lens", weight, bias, meta)
    del residuals, acts

    heldout = {}
    held_count = 0
    if held_windows:
        held = collect(lm, held_windows)
        held_count = held.num_positions
        heldout = heldout_kl(lm, lens, held, progress=phase("eval"))
        lens.meta["heldout_kl_logit_lens"] = json.dumps([round(v, 4) for v in heldout["logit_lens"]])
        lens.meta["heldout_kl_tuned_lens"] = json.dumps([round(v, 4) for v in heldout["tuned_lens"]])
        lens.meta["heldout_positions"] = str(held_count)
    report_to(1, 1, "tuned lens trained")
    report = TunedLensReport(
        source=source, train_positions=count, heldout_positions=held_count, steps=steps, batch=batch, lr=lr,
        seconds=time.perf_counter() - started, dtype=str(fast_dtype(lm.device)).replace("torch.", ""),
        loss=losses, heldout=heldout,
    )
    return lens, report


def heldout_from_meta(lens: AffineLens) -> dict | None:
    """The held-out KL a trained lens carries in its metadata: {"per_layer": {decoder: [L+1]},
    "mean_logit_lens", "mean_tuned_lens" (over layers 0..L-1), "positions"}; None if absent."""
    try:
        per_layer = {name: json.loads(lens.meta[f"heldout_kl_{name}"]) for name in ("logit_lens", "tuned_lens")}
    except (KeyError, ValueError):
        return None
    means = {f"mean_{name}": sum(values[:-1]) / max(1, len(values) - 1) for name, values in per_layer.items()}
    return {"per_layer": per_layer, **means, "positions": int(lens.meta.get("heldout_positions", 0))}
