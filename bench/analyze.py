"""What does one prompt's analysis cost, first view and full grid, against the work no implementation can avoid?

On the default model, for prompts of 32, 128, 512 and 2048 tokens, each length in its own
subprocesses (a fresh process per measurement of peak memory), time with plain torch:
  forward:  one forward pass with hidden states (the model's own, logits at every position);
  answer:   `sv.analyze`: the answer-position views of every decoder (answer first);
  window:   that, then the first heatmap window (14 positions ending at the answer);
  grid:     that, then the whole logit-lens grid (every layer x position: `res.logit_lens.entropy`);
  floor:    one forward with hidden states, then log-softmax, entropy and top-5 of every
            (layer, position) cell, all layers in one batched product, with no extra copy of the
            [layers, positions, vocab] logits (layer L read from the forward's own logits);
            skipped where its logits would not fit in half the available memory.
Repetitions are interleaved and each uses a different prompt; medians are reported, and the
ratios grid/floor and answer/forward come from the same process. `cpu g/f` is grid/floor of the
process's CPU time (both threads, `time.process_time`): on a shared machine, where another
program's load lengthens the wall time of the stage it happens to overlap, a second reading.
Peak memory is the growth of the process's peak resident size (`resource.getrusage` ru_maxrss)
over one run of the stage in a fresh process after loading the model and a warm-up on 8 tokens:
torch's CPU allocator keeps no statistics and tracemalloc does not see its buffers.

    .venv/bin/python bench/analyze.py [--lengths 32 128 512 2048] [--reps 3] [--model smollm2-135m]
    .venv/bin/python bench/analyze.py --lengths 15 500 2000 --first-views  # forward, answer, window only
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import spade_viz as sv  # noqa: E402
from spade_viz import windows  # noqa: E402

WORDS = ("river stone light music garden paper window market silver winter planet engine story "
         "forest bridge ocean letter mountain city teacher").split()
STAGES = ("forward", "answer", "window", "grid", "floor")


def make_prompt(lm, rng: random.Random, tokens: int) -> str:
    """A prompt of `tokens` tokens (with `<s>`), different each call."""
    words = [rng.choice(WORDS) for _ in range(tokens)]
    return lm.tokenizer.decode(lm.encode(" ".join(words))[1:tokens])


def forward(lm, ids):
    with torch.no_grad():
        return lm.model(input_ids=ids, output_hidden_states=True, use_cache=False)


def floor(lm, ids):
    """Forward, then log-softmax, entropy and top-5 at every (layer, position): all layers' logits
    in one batched product, one fused pass each after, and no copy of the logits."""
    with torch.no_grad():
        out = forward(lm, ids)
        for logits in (lm.adapter.logit_lens(torch.stack(out.hidden_states[:-1])[:, 0]), out.logits[0]):
            logp = torch.log_softmax(logits.float(), -1)
            (-(logp.exp() * logp).sum(-1)).sum().item()
            logp.topk(5, -1)
            del logp


def window(lm, prompt):
    res = sv.analyze(lm, prompt, max_tokens=4096)
    stop = res.answer_position + 1
    res.logit_lens.window(max(0, stop - windows.VIEW), stop)  # the Explore page's first heatmap
    return res


def runs(lm):
    return {
        "forward": lambda p: forward(lm, torch.tensor([lm.encode(p)])),
        "answer": lambda p: sv.analyze(lm, p, max_tokens=4096),
        "window": lambda p: window(lm, p),
        "grid": lambda p: sv.analyze(lm, p, max_tokens=4096).logit_lens.entropy,
        "floor": lambda p: floor(lm, torch.tensor([lm.encode(p)])),
    }


def floor_fits(lm, tokens: int) -> bool:
    """Whether the floor's [L, P, V] float32 logits, log-probabilities and their exponent fit in
    half the available memory."""
    need = 3 * lm.num_layers * tokens * lm.adapter.lm_head.weight.shape[0] * 4
    available = next(int(line.split()[1]) * 1024 for line in open("/proc/meminfo") if line.startswith("MemAvailable"))
    return need < available / 2


def worker(model: str, tokens: int, reps: int, stage: str | None, first_views: bool = False) -> dict:
    """Medians of every stage (stage None), or the peak memory growth of one run of `stage`."""
    torch.manual_seed(0)
    lm = sv.load_model(model)
    rng = random.Random(tokens)
    prompts = [make_prompt(lm, rng, tokens) for _ in range(reps + 1)]
    calls = runs(lm)
    warm = make_prompt(lm, rng, 8)
    for name, call in calls.items():
        if stage in (None, name):
            call(warm)
    if stage is not None:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        calls[stage](prompts[0])
        return {"peak_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}
    if not floor_fits(lm, tokens) or first_views:
        del calls["floor"]
    if first_views:
        del calls["grid"]
    times = {name: [] for name in calls}
    cpu = {name: [] for name in calls}
    for rep in range(reps):
        for name, call in calls.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            call(prompts[rep])
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {"model": lm.name, "threads": torch.get_num_threads(),
            **{name: statistics.median(values) for name, values in times.items()},
            "cpu": {name: statistics.median(values) for name, values in cpu.items()}}


def run_worker(args, tokens: int, reps: int, stage: str | None = None) -> dict:
    command = [sys.executable, __file__, "--worker", str(tokens), "--reps", str(reps), "--model", args.model]
    if args.first_views:
        command.append("--first-views")
    if stage:
        command += ["--stage", stage]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=sv.DEFAULT_MODEL)
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 128, 512, 2048])
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions (1 above 1024 tokens)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--first-views", action="store_true", help="time only forward, answer and first window")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.model, args.worker, args.reps, args.stage, args.first_views)))
        return

    print(f"model {args.model}; medians in ms of {args.reps} interleaved reps (1 above 1024 tokens); "
          "peak memory: ru_maxrss growth in a fresh process", flush=True)
    print(f"{'tokens':>6} {'forward':>8} {'answer':>8} {'window':>8} {'grid':>8} {'floor':>8} "
          f"{'answer/fwd':>10} {'grid/floor':>10} {'cpu g/f':>8} {'peak MiB answer/grid/floor':>27}", flush=True)
    for tokens in args.lengths:
        reps = args.reps if tokens <= 1024 else 1
        times = run_worker(args, tokens, reps)
        peaks = {}
        if not args.no_memory:
            for stage in ("answer", "grid", "floor")[: 1 if args.first_views else 3]:
                if stage in times:
                    peaks[stage] = run_worker(args, tokens, 1, stage)["peak_mib"]
        ms = {name: f"{times[name] * 1000:8.0f}" if name in times else f"{'n/a':>8}" for name in STAGES}
        ratio = f"{times['grid'] / times['floor']:10.2f}" if "floor" in times and "grid" in times else f"{'n/a':>10}"
        cpu = times["cpu"]
        cpu_ratio = f"{cpu['grid'] / cpu['floor']:8.2f}" if "floor" in cpu and "grid" in cpu else f"{'n/a':>8}"
        memory = "/".join(f"{peaks[s]:.0f}" if s in peaks else "n/a" for s in ("answer", "grid", "floor"))
        print(f"{tokens:>6} {ms['forward']} {ms['answer']} {ms['window']} {ms['grid']} {ms['floor']} "
              f"{times['answer'] / times['forward']:10.2f} {ratio} {cpu_ratio} {memory:>27}", flush=True)


if __name__ == "__main__":
    main()
