"""A model spread by accelerate (blocks on the CPU and on disk, accelerate's hooks in the forward)
reads exactly the numbers of the same model loaded whole: every decoder, the sweep, the real exit.

CPU-only machines can offload to disk, not spread over GPUs; the CUDA test at the end runs the
same comparison with blocks on the GPU and in CPU memory where a GPU is present.
"""

from __future__ import annotations

import threading
import types

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

import spade_viz as sv
from spade_viz.cli import main
from spade_viz.data import Dataset, Example
from spade_viz.engine import prepare_examples
from spade_viz.errors import InputError, ModelLoadError
from spade_viz.exit.real import exit_answer, prepare_prompts, run_real_exit
from spade_viz.lenses.affine import AffineLens, lens_meta
from spade_viz.lenses.linear_spade import fit_linear_spade
from spade_viz.lenses.spade import answer_rows
from spade_viz.lenses.stats import logit_stats
from spade_viz.lenses.tuned import train_tuned_lens
from spade_viz.models.registry import execution_device, find_module, spec_for
from spade_viz.sweep import SweepSettings, run_sweep
from tiny_models import TINY_CONFIGS

FAMILIES = ("llama", "gpt2", "opt", "qwen2")  # plain, GPT-2 layout, OPT's project_out, tied unembedding
EXAMPLES = [
    Example("e1", "France: Paris\nJapan:", " Tokyo"),
    Example("e2", "Italy: Rome\nEgypt:", " Cairo"),
    Example("e3", "English: cat\nFrench:", " chat"),
    Example("e4", "Question: Is the sky blue?\nAnswer:", " Yes", choices=(" Yes", " No")),
    Example("e5", "The quick brown fox", " jumps"),
    Example("e6", "1 2 3 4", " 5"),
    Example("e7", "Egypt: Cairo\nGermany: Berlin\nFrance:", " Paris"),
    Example("e8", "hot cold big", " small"),
]
PROMPT = "Egypt: Cairo\nGermany: Berlin\nFrance:"


def split_map(folder) -> dict:
    """A device map with odd blocks, the final norm, the unembedding and the input embedding on
    disk and everything else in CPU memory: accelerate's hooks then run around every block."""
    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    spec = spec_for(model)
    blocks = find_module(model, spec.blocks)
    names = {id(m): n for n, m in model.named_modules()}
    places = {f"{spec.blocks}.{i}": "cpu" if i % 2 == 0 else "disk" for i in range(len(blocks))}
    places[spec.final_norm] = "disk"
    places[names[id(model.get_output_embeddings())]] = "disk"
    places[names[id(model.get_input_embeddings())]] = "disk"
    device_map = {}

    def walk(prefix: str, module) -> None:
        for name, child in module.named_children():
            full = prefix + name
            if full in places:
                device_map[full] = places[full]
            elif any(place.startswith(full + ".") for place in places):
                walk(full + ".", child)
            else:
                device_map[full] = "cpu"

    walk("", model)
    return device_map


@pytest.fixture(scope="module")
def offload_cache(tmp_path_factory):
    """Where offloaded weights may be written: a cache of this module's own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPADE_VIZ_CACHE", str(tmp_path_factory.mktemp("offload-cache")))
        yield


@pytest.fixture(scope="module")
def pairs(tiny_folders, offload_cache) -> dict:
    """family -> (the model loaded whole on the CPU, the same model spread over CPU and disk)."""
    return {family: (sv.load_model(str(tiny_folders[family]), device="cpu"),
                     sv.load_model(str(tiny_folders[family]), device_map=split_map(tiny_folders[family])))
            for family in FAMILIES}


def lenses_for(lm) -> dict[str, AffineLens]:
    """A random tuned lens and linear SPADE for `lm` (any maps will do: both models get the same)."""
    gen = torch.Generator().manual_seed(3)
    d_in, d_out = lm.model.config.hidden_size, lm.adapter.lm_head.weight.shape[1]
    out = {}
    for kind, width in (("tuned_lens", d_in), ("linear_spade", d_out)):
        weight = torch.eye(width, d_in).expand(lm.num_layers, width, d_in) \
            + 0.1 * torch.randn(lm.num_layers, width, d_in, generator=gen)
        out[kind] = AffineLens(kind, weight, 0.1 * torch.randn(lm.num_layers, width, generator=gen), lens_meta(lm))
    return out


def assert_stats_equal(a, b) -> None:
    """Two DecodeStats: the same tokens and ranks, the same probabilities to 1e-5."""
    np.testing.assert_array_equal(a.top_ids, b.top_ids)
    np.testing.assert_array_equal(a.target_rank, b.target_rank)
    for name in ("top_probs", "entropy", "kl_to_final", "target_prob"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_spread_model_runs_through_accelerate_hooks(pairs, family):
    """The spread model really is dispatched: hooks on every block, weights on `meta` until used."""
    whole, spread = pairs[family]
    assert all(hasattr(block, "_hf_hook") for block in spread.adapter.blocks)
    assert not any(hasattr(block, "_hf_hook") for block in whole.adapter.blocks)
    assert "disk" in spread.model.hf_device_map.values() and "cpu" in spread.model.hf_device_map.values()
    assert any(p.device.type == "meta" for p in spread.adapter.blocks[1].parameters())
    assert spread.offloaded and not whole.offloaded
    assert spread.fingerprint() == whole.fingerprint()  # offloaded weights are read from their store
    assert spread.device == spread.input_device == torch.device("cpu")


@pytest.mark.parametrize("family", FAMILIES)
def test_analysis_is_exact_when_offloaded(pairs, family):
    """Every decoder's grid and answer column (logit lens, tuned lens, SPADE with and without <s>,
    linear SPADE) and SPADE at every position equal the whole model's."""
    whole, spread = pairs[family]
    lenses = lenses_for(whole)
    a = sv.analyze(whole, PROMPT, lenses=lenses, without_bos=True)
    b = sv.analyze(spread, PROMPT, lenses=lenses, without_bos=True)
    assert a.grids.keys() == b.grids.keys() == {"logit_lens", "tuned_lens"}
    assert a.answer.keys() == b.answer.keys() == {"logit_lens", "tuned_lens", "spade", "spade_no_bos", "linear_spade"}
    for name in a.grids:
        assert_stats_equal(a.grids[name], b.grids[name])
    for name in a.answer:
        assert_stats_equal(a.answer[name], b.answer[name])
    assert_stats_equal(sv.spade_grid(whole, a), sv.spade_grid(spread, b))


@pytest.mark.parametrize("family", FAMILIES)
def test_spade_rows_are_exact_when_offloaded(pairs, family):
    whole, spread = pairs[family]
    prepared = prepare_examples(whole, EXAMPLES)[0]
    a, b = answer_rows(whole, prepared, batch_size=3), answer_rows(spread, prepared, batch_size=3)
    for name in ("residuals", "final", "spade"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_sweep_is_exact_when_offloaded(pairs, family, isolated_cache):
    """A sweep with every decoder (cross-fitted linear SPADE, choices on one row) equals the whole model's."""
    whole, spread = pairs[family]
    dataset = Dataset("toy", tuple(EXAMPLES), (), "toy-offload")
    settings = SweepSettings(batch_size=3, linear_spade="crossfit", folds=2)
    a = run_sweep(whole, dataset, settings, use_cache=False)
    b = run_sweep(spread, dataset, settings, use_cache=False)
    assert a.decoders == b.decoders and "linear_spade" in a.decoders
    np.testing.assert_array_equal(a.final_ids, b.final_ids)
    for name in a.decoders:
        np.testing.assert_array_equal(a.top1[name], b.top1[name])
        np.testing.assert_array_equal(a.top1_vocab[name], b.top1_vocab[name])
        np.testing.assert_allclose(a.entropy[name], b.entropy[name], rtol=0, atol=1e-5)
        np.testing.assert_allclose(a.entropy_vocab[name], b.entropy_vocab[name], rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_real_exit_is_exact_when_offloaded(pairs, family):
    """The real exit stops the spread forward at the same checkpoints and answers the same tokens."""
    whole, spread = pairs[family]
    lens = lenses_for(whole)["linear_spade"]
    prompts = prepare_prompts(whole, EXAMPLES)
    mask = np.ones(whole.num_layers + 1, dtype=bool)
    layers = set()
    for threshold in (0.0, 2.0, 4.0, 5.5, 100.0):
        for prompt in prompts:
            a = exit_answer(whole, prompt.ids, lens, mask, threshold, candidates=prompt.candidates)
            b = exit_answer(spread, prompt.ids, lens, mask, threshold, candidates=prompt.candidates)
            assert a == b
            layers.add(a.layer)
    assert len(layers) > 2  # exits at several layers, and none
    a = run_real_exit(whole, prompts, lens, 4.0, repeats=1)
    b = run_real_exit(spread, prompts, lens, 4.0, repeats=1)
    np.testing.assert_array_equal(a.exit_layers, b.exit_layers)
    np.testing.assert_array_equal(a.answers, b.answers)
    np.testing.assert_array_equal(a.full_answers, b.full_answers)


def test_tuned_lens_training_is_exact_when_offloaded(pairs):
    """Gradients flow through an offloaded final norm and unembedding as through resident ones."""
    whole, spread = pairs["llama"]
    texts = [e.prompt + e.answer for e in EXAMPLES]
    a, _ = train_tuned_lens(whole, texts, steps=3, batch=8)
    b, _ = train_tuned_lens(spread, texts, steps=3, batch=8)
    torch.testing.assert_close(a.weight, b.weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(a.bias, b.bias, rtol=0, atol=1e-6)


def test_max_memory_offloads_what_does_not_fit(tiny_folders, offload_cache):
    """A memory budget spreads the model automatically: what does not fit in it goes to disk."""
    folder = str(tiny_folders["llama"])
    whole = sv.load_model(folder, device="cpu")
    spread = sv.load_model(folder, device="cpu", max_memory="cpu=120KB")
    assert "disk" in spread.model.hf_device_map.values()
    assert all(hasattr(block, "_hf_hook") for block in spread.adapter.blocks)
    for name, stats in sv.analyze(whole, PROMPT).answer.items():
        assert_stats_equal(stats, sv.analyze(spread, PROMPT).answer[name])


def test_a_budget_the_model_fits_in_keeps_it_whole(tiny_folders, offload_cache):
    """accelerate spreads only what does not fit: within the budget the model stays on one device."""
    messages = []
    lm = sv.load_model(str(tiny_folders["llama"]), device="cpu", max_memory="cpu=1GiB",
                       progress=lambda done, total, message: messages.append((done, total, message)))
    assert not hasattr(lm.model, "hf_device_map") and not lm.offloaded
    assert not any(hasattr(block, "_hf_hook") for block in lm.adapter.blocks)
    assert messages[-1][:2] == (0, 0) and messages[-1][2].endswith("whole on cpu")  # a step without a count


def test_execution_devices_follow_the_device_map():
    """Where each part computes on a model spread over GPUs (checked without GPUs, on `meta`): a
    module's own entry, offloaded ones on the main device, as accelerate's dispatch arranges."""
    config = AutoConfig.for_model("llama", **TINY_CONFIGS["llama"])
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    model.hf_device_map = {"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": 1, "model.layers.2": "cpu",
                           "model.norm": 1, "model.rotary_emb": 0, "lm_head": "disk"}
    model._hf_hook = types.SimpleNamespace(execution_device=0)
    cuda = lambda index: torch.device("cuda", index)  # noqa: E731
    assert execution_device(model, model.get_input_embeddings()) == cuda(0)
    assert execution_device(model, model.model.layers[1].mlp) == cuda(1)
    assert execution_device(model, model.model.layers[2]) == cuda(0)  # CPU-offloaded: runs on the main GPU
    assert execution_device(model, model.model.norm) == cuda(1)
    assert execution_device(model, model.lm_head) == cuda(0)  # disk-offloaded
    model._hf_hook = types.SimpleNamespace(execution_device="cpu")
    assert execution_device(model, model.model.layers[2]) == torch.device("cpu")


def test_offloaded_model_serves_threads_one_operation_at_a_time(pairs):
    """accelerate swaps offloaded weights in and out of the modules on each call: operations from
    several threads on one offloaded model still give the single-thread numbers."""
    _, spread = pairs["llama"]
    expected = sv.analyze(spread, PROMPT).answer["spade"].entropy
    results, errors = [], []

    def work():
        try:
            for _ in range(3):
                results.append(sv.analyze(spread, PROMPT).answer["spade"].entropy)
        except Exception as err:  # reported below, with the thread's error
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 12
    for entropy in results:
        np.testing.assert_array_equal(entropy, expected)


@pytest.mark.parametrize("kwargs, message", [
    ({"device": "cpu", "max_memory": "cpu"}, "DEVICE=SIZE"),
    ({"device": "cpu", "max_memory": "cpu=lots"}, "a size such as"),
    ({"device": "cpu", "max_memory": {"cpu": 0}}, "a size such as"),
    ({"device": "cpu", "max_memory": "7=1GiB"}, "not available"),
    ({"device": "cpu", "max_memory": "disk=1GiB"}, "not available"),
    ({"device": "cpu", "max_memory": 5}, "max memory is a dict"),
    ({"device": "cpu", "device_map": "auto"}, "without device"),
    ({"device_map": ["cpu"]}, "device_map is 'auto' or a dict"),
])
def test_bad_placement_is_refused_in_one_line(tiny_folders, kwargs, message):
    with pytest.raises((InputError, ModelLoadError), match=message):
        sv.load_model(str(tiny_folders["llama"]), **kwargs)


def test_cli_max_memory(tiny_folders, offload_cache, capsys):
    folder = str(tiny_folders["llama"])
    assert main(["analyze", PROMPT, "--model", folder, "--device", "cpu", "--max-memory", "cpu=120KB"]) == 0
    out, err = capsys.readouterr()
    assert "on disk" in err and "SPADE" in out
    assert main(["analyze", PROMPT, "--model", folder, "--device", "cpu", "--max-memory", "0=1GiB"]) == 2
    assert "not available" in capsys.readouterr().err


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_half_precision_statistics_are_float32_and_close_to_fp32(tiny_folders, isolated_cache, dtype):
    """Half-precision weights, float32 statistics on every path (analysis, sweep, real exit): the
    CPU side of the GPU path."""
    folder = str(tiny_folders["llama"])
    full, half = sv.load_model(folder, device="cpu"), sv.load_model(folder, device="cpu", dtype=dtype)
    assert half.model.dtype == sv.DTYPES[dtype]
    a, b = sv.analyze(full, PROMPT), sv.analyze(half, PROMPT)
    for name in a.answer:
        stats = b.answer[name]
        assert stats.entropy.dtype == stats.top_probs.dtype == stats.kl_to_final.dtype == np.float32
        assert np.isfinite(stats.entropy).all() and np.isfinite(stats.kl_to_final).all()
        np.testing.assert_allclose(stats.entropy, a.answer[name].entropy, atol=0.1)
    with torch.no_grad():
        logits = half.adapter.logit_lens(b.residuals[:, -1].to(half.device, half.dtype))
    assert logits.dtype == sv.DTYPES[dtype]
    stats = logit_stats(logits, torch.full((len(logits), 1), -1))
    assert stats["entropy"].dtype == torch.float32 and torch.isfinite(stats["entropy"]).all()
    dataset = Dataset("toy", tuple(EXAMPLES), (), "toy-half")
    settings = SweepSettings(batch_size=4, linear_spade="crossfit", folds=2)
    swept, reference = run_sweep(half, dataset, settings, use_cache=False), run_sweep(full, dataset, settings,
                                                                                     use_cache=False)
    for name in swept.decoders:
        assert swept.entropy[name].dtype == np.float32 and np.isfinite(swept.entropy[name]).all()
        np.testing.assert_allclose(swept.entropy[name], reference.entropy[name], atol=0.1)
    # the real exit in half precision leaves where the half-precision analysis's linear SPADE is first
    # below the threshold; thresholds taken in gaps between those entropies that no rounding can bridge
    lens = lenses_for(half)["linear_spade"]  # the same maps as for `full`, fitted (in name) on `half`
    L = half.num_layers
    mask = np.ones(L + 1, dtype=bool)
    prompts = prepare_prompts(half, EXAMPLES)
    entropy = np.stack([sv.analyze(half, half.tokenizer.decode(p.ids[1:]), lenses={"linear_spade": lens})
                        .answer["linear_spade"].entropy[:L, 0] for p in prompts])
    values = np.unique(entropy)
    wide = np.diff(values) > 0.05
    seen = set()
    for tau in ((values[:-1] + values[1:]) / 2)[wide]:
        below = entropy < tau
        expected = np.where(below.any(axis=1), below.argmax(axis=1), L)
        assert [exit_answer(half, p.ids, lens, mask, float(tau)).layer for p in prompts] == expected.tolist(), tau
        seen |= set(expected.tolist())
    assert len(seen) >= 3  # early, late and no exit are all exercised


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the CPU-side checks above always run)")
def test_cuda_spread_and_half_precision(tiny_folders, offload_cache, isolated_cache):
    """On a GPU: blocks alternating between the GPU and CPU memory read what the whole model on the
    GPU reads (analysis, sweep, real exit); in bf16 every path runs (calibration, tuned-lens
    training included) with float32 statistics close to fp32."""
    folder = str(tiny_folders["llama"])
    whole = sv.load_model(folder, device="cuda")
    device_map = {k: 0 if v == "cpu" else "cpu" for k, v in split_map(folder).items()}
    spread = sv.load_model(folder, device_map=device_map)
    assert spread.offloaded and spread.device.type == "cuda"
    lenses = lenses_for(whole)
    a, b = sv.analyze(whole, PROMPT, lenses=lenses), sv.analyze(spread, PROMPT, lenses=lenses)
    for name in a.answer:
        assert_stats_equal(a.answer[name], b.answer[name])
    dataset = Dataset("toy", tuple(EXAMPLES), (), "toy-cuda")
    settings = SweepSettings(batch_size=3, linear_spade="crossfit", folds=2)
    swept = run_sweep(whole, dataset, settings, use_cache=False)
    for name, entropy in run_sweep(spread, dataset, settings, use_cache=False).entropy.items():
        np.testing.assert_allclose(entropy, swept.entropy[name], rtol=0, atol=1e-5)
    lens = lenses["linear_spade"]
    mask = np.ones(whole.num_layers + 1, dtype=bool)
    for prompt in prepare_prompts(whole, EXAMPLES):
        assert exit_answer(whole, prompt.ids, lens, mask, 4.0, candidates=prompt.candidates) \
            == exit_answer(spread, prompt.ids, lens, mask, 4.0, candidates=prompt.candidates)
    half = sv.load_model(folder, device="cuda", dtype="bf16")
    c = sv.analyze(half, PROMPT)
    for name in c.answer:
        assert c.answer[name].entropy.dtype == np.float32 and np.isfinite(c.answer[name].entropy).all()
        np.testing.assert_allclose(c.answer[name].entropy, a.answer[name].entropy, atol=0.15)
    for entropy in run_sweep(half, dataset, settings, use_cache=False).entropy.values():
        assert entropy.dtype == np.float32 and np.isfinite(entropy).all()
    calibration = fit_linear_spade(half, dataset, save=False)
    assert all(np.isfinite(row["entropy_mae"]) for row in calibration.scores)
    run_real_exit(half, prepare_prompts(half, EXAMPLES), calibration.lens, 4.0, repeats=1)
    tuned, report = train_tuned_lens(half, [e.prompt + e.answer for e in EXAMPLES], steps=2, batch=8)
    assert np.isfinite(report.loss).all() and torch.isfinite(tuned.weight).all()
