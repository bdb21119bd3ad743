"""A class arriving at once: N chromium tabs open the Explore page on one warm server in server mode,
each with a built-in preset (the presets in turn), all at the same moment.

First one tab opens Explore alone (the first visitor after "ready": time to its heatmaps). Then
prints the median and p95 time from opening a tab to its final answer on the page, the server's
CPU-seconds per student (from /proc of the server process, from "ready" to the last answer), its peak
memory, the errors on the pages, and whether every answer (the final token and the SPADE column of the
answer heatmap) equals a serial `sv.analyze` of the same prompt, computed after the class has gone.

    python bench/class_load.py [--tabs 12] [--timeout 600]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from browser import chromium_browser, warm_server  # noqa: E402

ANSWER_JS = """() => {  // the final answer and the answer heatmap's SPADE column, once both are drawn
    const done = !document.querySelector('[data-testid="stStatusWidgetRunningIcon"]');
    const plots = document.querySelectorAll('.js-plotly-plot');
    const line = Array.from(document.querySelectorAll('p')).find(p => p.innerText.includes('Final answer:'));
    const errors = document.querySelectorAll('[data-testid="stException"], [data-testid="stAlertContentError"]');
    if (errors.length) return {error: Array.from(errors, e => e.innerText).join(' | ').slice(0, 300)};
    if (!done || plots.length < 4 || !line || !plots[1]._fullData) return null;
    const heat = plots[1];
    const column = Array.from(heat.layout.xaxis.ticktext).indexOf('SPADE');
    return {line: line.innerText, spade: Array.from(heat._fullData[0].z, row => row[column])};
}"""


def presets() -> dict[str, str]:
    from spade_viz.app.datasets import presets as builtin  # the page's own list, in its order

    return {p.name: p.text for p in builtin()}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (its threads included), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_memory_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(tabs: int, timeout: float = 600.0, env: dict | None = None, log_path: Path | None = None) -> dict:
    """Open `tabs` tabs at once on a fresh warm server; their timings, the server's cost, the errors."""
    names = list(presets())
    chosen = [names[i % len(names)] for i in range(tabs)]
    env = {**(env or os.environ), "SPADE_VIZ_SERVE": (env or os.environ).get("SPADE_VIZ_SERVE", "1")}
    shown, errors, seconds = {}, {}, {}
    with warm_server(env=env, log_path=log_path) as (url, server), chromium_browser() as browser:
        first = browser.new_page(viewport={"width": 1280, "height": 900})
        tick = time.perf_counter()  # the first visitor after "ready": Explore's heatmaps drawn
        first.goto(f"{url}/Explore", wait_until="commit")
        first.wait_for_function(ANSWER_JS, timeout=timeout * 1000)
        first_visit = time.perf_counter() - tick
        first.close()
        pages = [browser.new_page(viewport={"width": 1280, "height": 900}) for _ in chosen]
        cpu_before = cpu_seconds(server.pid)
        started = {}
        for i, (page, name) in enumerate(zip(pages, chosen)):
            started[i] = time.perf_counter()
            page.goto(f"{url}/Explore?{urllib.parse.urlencode({'preset': name})}", wait_until="commit")
        deadline = time.perf_counter() + timeout
        waiting = set(range(tabs))
        while waiting and time.perf_counter() < deadline:
            for i in sorted(waiting):
                try:
                    got = pages[i].evaluate(ANSWER_JS)
                except Exception as err:  # a page still navigating: look again
                    got = None if "navigat" in str(err) or "context" in str(err) else {"error": str(err)[:300]}
                if got is None:
                    continue
                waiting.discard(i)
                seconds[i] = time.perf_counter() - started[i]
                if "error" in got:
                    errors[i] = got["error"]
                else:
                    shown[i] = got
            time.sleep(0.1)
        for i in waiting:
            errors[i] = f"no final answer within {timeout:.0f} s"
        cpu = cpu_seconds(server.pid) - cpu_before
        peak = peak_memory_mb(server.pid)
    return {"tabs": tabs, "presets": chosen, "seconds": seconds, "shown": shown, "errors": errors,
            "server_cpu_s": cpu, "peak_mb": peak, "first_visit_s": first_visit}


def equal_to_serial(found: dict) -> list[str]:
    """The tabs whose answer differs from a serial `sv.analyze` of their prompt (empty: all equal)."""
    import spade_viz as sv

    lm = sv.load_model(sv.DEFAULT_MODEL)
    texts, differ, expected = presets(), [], {}
    for i, name in enumerate(found["presets"]):
        if i not in found["shown"]:
            continue
        if name not in expected:
            expected[name] = sv.analyze(lm, texts[name])
        res, got = expected[name], found["shown"][i]
        final = sv.viz.visible_token(res.token(res.final_answer_id))
        spade = np.array(got["spade"], dtype=float)
        if f"Final answer: {final} " not in got["line"] + " " or spade.shape != (lm.num_layers + 1,) or \
                not np.allclose(spade, res.answer["spade"].entropy[:, 0], atol=1e-3):
            differ.append(f"tab {i} ({name})")
    return differ


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tabs", type=int, default=12)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a tab may take")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "server.log"
        found = run(args.tabs, args.timeout, log_path=log)
        ready = [line for line in log.read_text(errors="replace").splitlines() if line.startswith(("loaded", "warm"))]
    times = sorted(found["seconds"][i] for i in found["shown"])
    differ = equal_to_serial(found)
    print(f"{args.tabs} tabs, {len(set(found['presets']))} distinct presets, on one warm server in server mode "
          f"({'; '.join(ready)})")
    print(f"first Explore visit after ready (one tab, before the class): heatmaps drawn in "
          f"{found['first_visit_s']:.1f} s")
    if times:
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        print(f"time to the final answer: median {statistics.median(times):.1f} s, p95 {p95:.1f} s, "
              f"max {times[-1]:.1f} s")
    print(f"server CPU: {found['server_cpu_s']:.1f} s in all, {found['server_cpu_s'] / args.tabs:.2f} s per student")
    print(f"server peak memory: {found['peak_mb']:.0f} MB")
    print(f"errors: {len(found['errors'])}" + "".join(f"\n  tab {i}: {why}" for i, why in found["errors"].items()))
    print("answers equal to serial sv.analyze: " + ("yes, every one" if not differ and not found["errors"]
                                                    else f"no: {', '.join(differ) or 'see the errors'}"))


if __name__ == "__main__":
    main()
