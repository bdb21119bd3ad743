"""Pressing Analyze, as a person feels it: a real chromium on the README's warm server, prompts of
several lengths typed into the Explore page's box, the wall clock from the click to the page showing
that prompt's final answer and its first heatmap drawn (its tokens counted, its window's columns).

Each press uses a new prompt (random words: no analysis is cached), lengths interleaved; medians are
printed with the ratio of each length to the shortest, measured in the same run on the same server,
and beside them one plain forward pass of the same prompts (the model's blocks over every token and its
head at the last: the part no lens can avoid), timed in this process on the quiet machine after the
browser is done. `bound` is the ratio an analysis would reach if everything but that forward pass were
free: the shortest prompt's time plus the difference of the two forward passes, over the shortest's
time. Then whether every final answer on the page equals `sv.analyze`'s.

    python bench/analyze_browser.py [--lengths 15 500 2000] [--reps 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import spade_viz as sv  # noqa: E402
from browser import chromium_page, warm_server  # noqa: E402
from spade_viz import viz  # noqa: E402

WORDS = ("river stone light music garden paper window market silver winter planet engine story "
         "forest bridge ocean letter mountain city teacher").split()
WATCH_JS = """(tokens) => {  // from now on, the first frame showing a prompt of `tokens` tokens: its final answer
    // line and its heatmap drawn. Checked when the page changes (a MutationObserver), never polled: a
    // check every frame (layout of every paragraph's text) took a share of the CPU the server computes on.
    const shown = () => {
        const errors = document.querySelectorAll('[data-testid="stException"], [data-testid="stAlertContentError"]');
        if (errors.length) return {error: Array.from(errors, e => e.textContent).join(' | ').slice(0, 300)};
        const line = Array.from(document.querySelectorAll('p')).find(p => p.textContent.startsWith(tokens + ' tokens'));
        const heat = document.querySelector('.js-plotly-plot');
        if (!line || !heat || !heat._fullData || !heat._fullData.length) return null;
        const columns = heat._fullData[0].z[0].length, title = String(heat.layout.title.text);
        if (tokens > 14 ? !title.includes(`of ${tokens})`) : columns !== tokens) return null;  // the previous prompt's
        return {line: line.textContent};
    };
    window.__shown = null;
    const pressed = performance.now();
    const observer = new MutationObserver(() => {
        const found = shown();
        if (!found) return;
        observer.disconnect();
        requestAnimationFrame(() => { window.__shown = {...found, ms: performance.now() - pressed}; });
    });
    observer.observe(document.body, {childList: true, subtree: true, attributes: true, characterData: true});
}"""


def make_prompt(lm, rng: random.Random, tokens: int) -> str:
    """A prompt of exactly `tokens` tokens (with `<s>`), different each call."""
    for extra in range(8):
        words = [rng.choice(WORDS) for _ in range(tokens + extra)]
        text = lm.tokenizer.decode(lm.encode(" ".join(words))[1:tokens])
        if len(lm.encode(text)) == tokens:
            return text
    raise RuntimeError(f"no prompt of {tokens} tokens")


def press(page, prompt: str, tokens: int, timeout_ms: int) -> dict:
    """Type `prompt`, press Analyze, wait for its answer and first heatmap; the time from the click."""
    box = page.get_by_label("Prompt (the model predicts the token that comes next)")
    box.fill(prompt)
    page.evaluate(WATCH_JS, tokens)
    page.get_by_role("button", name="Analyze").click()
    found = page.wait_for_function("() => window.__shown", timeout=timeout_ms, polling=200).json_value()
    page.wait_for_timeout(300)
    return found


def run(lengths: list[int], reps: int, timeout: float = 600) -> dict:
    """{length: [ms, ...]}, the answers shown and any error, from one warm server and one tab."""
    lm = sv.load_model(sv.DEFAULT_MODEL)
    rng = random.Random(0)
    times = {n: [] for n in lengths}
    shown, errors = [], []
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    with warm_server(log_path=ROOT / "test-artifacts" / "analyze-browser.log") as (url, _):
        with chromium_page(1280, 900) as page:
            page.set_default_timeout(timeout * 1000)
            page.goto(f"{url}/Explore")
            page.get_by_role("button", name="Analyze").wait_for()
            press(page, make_prompt(lm, rng, 8), 8, int(timeout * 1000))  # the tab's own warm-up
            for _ in range(reps):
                for tokens in lengths:
                    prompt = make_prompt(lm, rng, tokens)
                    found = press(page, prompt, tokens, int(timeout * 1000))
                    if "error" in found:
                        errors.append(found["error"])
                        continue
                    times[tokens].append(found["ms"])
                    shown.append((prompt, found["line"]))
    return {"times": times, "shown": shown, "errors": errors, "lm": lm}


def forward_seconds(lm, prompts: list[str]) -> float:
    """The median wall clock of one plain forward pass over each prompt, logits at the last position."""
    times = []
    with torch.no_grad():
        lm.model(input_ids=torch.tensor([lm.encode(prompts[0])]), use_cache=False, logits_to_keep=1)  # warm-up
        for prompt in prompts:
            ids = torch.tensor([lm.encode(prompt)])
            start = time.perf_counter()
            lm.model(input_ids=ids, use_cache=False, logits_to_keep=1)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def answers_differ(found: dict) -> list[str]:
    """The prompts whose final answer on the page is not `sv.analyze`'s."""
    lm = found["lm"]
    wrong = []
    for prompt, line in found["shown"]:
        res = sv.analyze(lm, prompt, max_tokens=4096)
        if f"Final answer: {viz.visible_token(res.token(res.final_answer_id))}" not in line:
            wrong.append(prompt[:40])
    return wrong


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[15, 500, 2000])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    found = run(args.lengths, args.reps)
    base = statistics.median(found["times"][args.lengths[0]]) if found["times"][args.lengths[0]] else float("nan")
    lm, prompts = found["lm"], {}
    for prompt, line in found["shown"]:
        prompts.setdefault(int(line.split(" tokens")[0]), []).append(prompt)
    print(f"{'tokens':>6} {'median s':>9} {'max s':>7} {'/ shortest':>10} {'forward s':>9} {'bound':>6}   "
          "(click -> final answer and first heatmap; one plain forward of the same prompts)")
    forwards = {tokens: forward_seconds(lm, prompts[tokens]) for tokens, values in found["times"].items() if values}
    for tokens, values in found["times"].items():
        if values:
            median = statistics.median(values)
            bound = (base / 1000 + forwards[tokens] - forwards[args.lengths[0]]) / (base / 1000)
            print(f"{tokens:>6} {median / 1000:9.2f} {max(values) / 1000:7.2f} {median / base:10.2f} "
                  f"{forwards[tokens]:9.2f} {bound:6.2f}")
    print(f"errors: {len(found['errors'])} {found['errors'][:3]}")
    print(f"answers differing from sv.analyze: {answers_differ(found)}")


if __name__ == "__main__":
    main()
