"""Many sessions, one model: every public operation gives, bit for bit, the result it gives alone
while other threads use the same loaded model (the app shares one model between all sessions,
each in its own thread)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import spade_viz as sv
from spade_viz.data import Dataset, Example
from spade_viz.exit import Checkpoints
from spade_viz.exit.real import prepare_prompts, run_real_exit
from spade_viz.lenses.linear_spade import fit_linear_spade
from spade_viz.lenses.tuned import train_tuned_lens
from spade_viz.models import surgery
from spade_viz.sweep import SweepSettings, run_sweep

PROMPTS = [
    "France: Paris\nJapan: Tokyo\nItaly: Rome\nEgypt:",
    "The quick brown fox jumps over the lazy",
    "English: cat\nFrench: chat\nEnglish: dog\nFrench:",
    "1 2 3 4 5 6 7",
]
FACTS = [("France", " Paris"), ("Japan", " Tokyo"), ("Italy", " Rome"), ("Egypt", " Cairo"), ("Germany", " Berlin"),
         ("Spain", " Madrid"), ("Greece", " Athens"), ("Peru", " Lima"), ("Cuba", " Havana"), ("Chile", " Santiago")]


def capitals(n: int) -> Dataset:
    shots = "France: Paris\nJapan: Tokyo\n"
    examples = tuple(Example(f"c{i}", f"{shots}{country}:", answer) for i, (country, answer) in enumerate(FACTS[:n]))
    return Dataset("capitals-mini", examples, (), f"test-{n}")


def _arrays(*objects) -> tuple:
    """Every array of the results, as bytes: equal keys mean bitwise equal results."""
    out = []
    for obj in objects:
        if isinstance(obj, dict):
            out += [(k, *_arrays(v)) for k, v in sorted(obj.items())]
        elif isinstance(obj, torch.Tensor):
            out.append(obj.detach().cpu().numpy().tobytes())
        elif isinstance(obj, np.ndarray):
            out.append(obj.tobytes())
        elif hasattr(obj, "__dataclass_fields__"):
            out += _arrays(*(getattr(obj, name) for name in obj.__dataclass_fields__))
        else:
            out.append(repr(obj))
    return tuple(out)


def analysis_key(res: sv.Analysis) -> tuple:
    """Every grid read whole (its chunks computed in this thread, or by another one), and the answer."""
    grids = {name: res.grid(name).window() for name in [*res.grids, "spade"]}
    return _arrays(grids, res.answer, res.answer_states, res.target_id)


def sweep_key(result) -> tuple:
    return _arrays(result.top1, result.entropy, result.entropy_vocab, result.top1_vocab, result.final_ids)


def operations(lm: sv.LoadedModel, n_examples: int, tuned_steps: int) -> dict:
    """name -> a call whose result key must not depend on what other threads do."""
    dataset = capitals(n_examples)
    lens = fit_linear_spade(lm, dataset, save=False).lens
    prompts = prepare_prompts(lm, dataset.examples)
    base = sv.analyze(lm, PROMPTS[0])
    settings = SweepSettings(batch_size=4, linear_spade="crossfit", tuned_lens=False)

    def real_exit():
        report = run_real_exit(lm, prompts, lens, threshold=2.0, checkpoints=Checkpoints(start=1), repeats=1)
        return _arrays(report.exit_layers, report.answers, report.full_answers)

    def tuned():
        trained, _report = train_tuned_lens(lm, ["France: Paris\nJapan: Tokyo\nItaly: Rome\n" * 3], steps=tuned_steps,
                                            batch=4)
        return _arrays(trained.weight, trained.bias)

    ops = {f"analyze {i}": (lambda p=p: analysis_key(sv.analyze(lm, p))) for i, p in enumerate(PROMPTS)}
    ops.update({
        "retarget": lambda: analysis_key(sv.retarget(lm, base, " Rome")),
        "sweep": lambda: sweep_key(run_sweep(lm, dataset, settings, use_cache=False)),
        "calibrate": lambda: _arrays(fit_linear_spade(lm, dataset, save=False).lens.weight),
        "real exit": real_exit,
        "tuned lens": tuned,
    })
    return ops


def run_at_once(ops: dict, repeats: int) -> dict[str, list]:
    """Each operation in its own thread, all released together, `repeats` times each."""
    results: dict[str, list] = {name: [] for name in ops}
    gate = threading.Barrier(len(ops))

    def work(name):
        gate.wait()
        for _ in range(repeats):
            try:
                results[name].append(ops[name]())
            except Exception as err:  # a crash is a failure like any other difference
                results[name].append(f"raised {type(err).__name__}: {err}")

    threads = [threading.Thread(target=work, args=(name,)) for name in ops]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def check_concurrent_equals_serial(lm, n_examples, tuned_steps, repeats):
    ops = operations(lm, n_examples, tuned_steps)
    assert len(ops) >= 6
    serial = {name: op() for name, op in ops.items()}
    together = run_at_once(ops, repeats)
    wrong = [f"{name} (run {i + 1})" for name, got in together.items() for i, key in enumerate(got)
             if key != serial[name]]
    assert not wrong, f"differ from the serial result or raised: {wrong}"
    assert lm.activity.snapshot()[1] == 0  # every operation let go of the model


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_threads_mixing_every_operation_equal_serial_on_tiny_models(tiny_lms, family, isolated_cache):
    check_concurrent_equals_serial(tiny_lms[family], n_examples=8, tuned_steps=3, repeats=2)


@pytest.mark.slow
def test_threads_mixing_every_operation_equal_serial_on_default_model(default_lm, isolated_cache):
    check_concurrent_equals_serial(default_lm, n_examples=6, tuned_steps=2, repeats=1)


def test_surgery_is_scoped_to_the_call_that_opened_it(tiny_lm):
    """A plan opened in one thread is invisible to a forward in another, and gone after its block,
    even when the block raised."""
    blocks = tiny_lm.adapter.blocks
    ids = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad():
        plain = tiny_lm.model(input_ids=ids).logits
    inside, other = threading.Event(), {}

    def other_thread():
        inside.wait()
        with torch.no_grad():
            other["logits"] = tiny_lm.model(input_ids=ids).logits

    thread = threading.Thread(target=other_thread)
    thread.start()
    with pytest.raises(RuntimeError, match="stop here"):
        with torch.no_grad(), surgery.injecting(blocks, torch.zeros(1, 32), torch.tensor([1]), skip_below=1):
            inside.set()
            thread.join()
            raise RuntimeError("stop here")
    assert torch.equal(other["logits"], plain)
    with torch.no_grad():
        assert torch.equal(tiny_lm.model(input_ids=ids).logits, plain)


def test_no_module_outside_surgery_changes_a_model():
    """Hooks and replaced forwards live in `spade_viz.models.surgery` alone."""
    from pathlib import Path

    root = Path(sv.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        if path.name == "surgery.py":
            continue
        text = path.read_text(encoding="utf-8")
        for needle in ("register_forward_hook", "register_forward_pre_hook", ".forward =", "register_module_forward"):
            if needle in text:
                offenders.append(f"{path.relative_to(root)}: {needle}")
    assert not offenders, offenders


def test_real_exit_report_says_when_other_work_ran(tiny_lm):
    dataset = capitals(4)
    lens = fit_linear_spade(tiny_lm, dataset, save=False).lens
    prompts = prepare_prompts(tiny_lm, dataset.examples)
    quiet = run_real_exit(tiny_lm, prompts, lens, threshold=2.0, repeats=1)
    assert quiet.other_work == 0 and "other_work_during_timing" in quiet.to_dict()
    with tiny_lm.activity.operation():  # another session's job, running all along
        busy = run_real_exit(tiny_lm, prompts, lens, threshold=2.0, repeats=1)
    assert busy.other_work >= 1


def test_sessions_asking_the_store_for_one_analysis_at_once_compute_it_once(tiny_lm):
    from spade_viz.app import analyses

    store, calls, start = analyses.AnalysisStore(budget_bytes=2**30), [], threading.Barrier(6)

    def compute():
        calls.append(1)
        return sv.analyze(tiny_lm, PROMPTS[0])

    got = [None] * 6

    def session(i: int) -> None:
        start.wait()
        got[i] = store.get(("one", "key"), compute)

    threads = [threading.Thread(target=session, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and all(res is got[0] for res in got)
    assert analysis_key(got[0]) == analysis_key(sv.analyze(tiny_lm, PROMPTS[0]))
    assert not store.pending


def test_a_failed_analysis_lets_the_waiting_session_compute_it(tiny_lm):
    from spade_viz.app import analyses

    store, first_started, release = analyses.AnalysisStore(budget_bytes=2**30), threading.Event(), threading.Event()

    def failing():
        first_started.set()
        release.wait()
        raise sv.InputError("the first session's computation failed")

    outcome = {}

    def first() -> None:
        try:
            store.get("k", failing)
        except sv.InputError as err:
            outcome["first"] = str(err)

    def second() -> None:
        outcome["second"] = store.get("k", lambda: sv.analyze(tiny_lm, PROMPTS[1]))

    one = threading.Thread(target=first)
    one.start()
    first_started.wait()
    two = threading.Thread(target=second)
    two.start()
    release.set()
    one.join()
    two.join()
    assert outcome["first"] == "the first session's computation failed"
    assert analysis_key(outcome["second"]) == analysis_key(sv.analyze(tiny_lm, PROMPTS[1]))
    assert list(store.entries) == ["k"] and not store.pending


def test_figures_are_built_once_per_analysis_and_view(tiny_lm):
    from spade_viz.app import analyses

    store = analyses.AnalysisStore(budget_bytes=2**30)
    res = store.get("k", lambda: sv.analyze(tiny_lm, PROMPTS[0]))
    builds = []

    def build(metric):
        builds.append(metric)
        return {"heatmap_answer": sv.viz.answer_heatmap(res, metric)}

    first = store.view((res,), ("entropy",), lambda: build("entropy"))
    assert store.view((res,), ("entropy",), lambda: build("entropy")) is first  # a rerun: nothing rebuilt
    other = store.view((res,), ("top1_prob",), lambda: build("top1_prob"))
    assert builds == ["entropy", "top1_prob"] and other is not first
    ref = store.figures[((id(res),), ("entropy",))][0][0]
    assert ref() is res  # held weakly: the figures do not keep the analysis alive
