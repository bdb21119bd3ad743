"""Invariants every decoder must satisfy, on a tiny random model of every family and on the real default.

The SPADE reference here is the plain definition: run the 2-token sequence [<s>, x_T] with
positions (0, T) and, after block l, swap in the full pass's rows h_l[0] and h_l[T]. The
product's fast path (one batched call over all layers, `<s>` from a one-token KV cache) must
agree with it to float tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import spade_viz as sv
from spade_viz.lenses.affine import AffineLens, lens_meta
from spade_viz.models import surgery
from tiny_models import FAMILIES

PROMPT = "France: Paris\nGermany: Berlin\nItaly:"


def plain_forward(lm, ids, positions=None):
    # An explicit attention mask matters: without one, transformers reads non-consecutive
    # position ids such as (0, T) as two packed sequences that cannot attend to each other.
    with torch.no_grad():
        out = lm.model(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            position_ids=None if positions is None else torch.tensor([positions]),
            output_hidden_states=True,
            use_cache=False,
        )
    return out


def entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), -1)
    return -(logp.exp() * logp).sum(-1)


def spade_reference(lm, hidden_states, ids, layer: int, mode: str = "original", with_bos: bool = True):
    """Final-normed state of the `<a>` row, by the plain definition of SPADE at `layer`."""
    answer = len(ids) - 1
    rows = [0, answer] if with_bos else [answer]
    tokens = [ids[r] for r in rows]
    if mode == "original":
        positions = rows
    else:
        positions = list(range(len(rows)))
    kept = torch.stack([hidden_states[layer][0, r] for r in rows]).unsqueeze(0)  # [1, rows, d]
    with torch.no_grad(), surgery.injecting(lm.adapter.blocks, kept, torch.tensor([layer])):
        out = lm.model(
            input_ids=torch.tensor([tokens]),
            attention_mask=torch.ones(1, len(tokens), dtype=torch.long),
            position_ids=torch.tensor([positions]),
            output_hidden_states=True,
            use_cache=False,
        )
    return out.hidden_states[-1][0, -1]


FINAL_NORM = {"gpt2": "transformer.ln_f", "gpt_neox": "gpt_neox.final_layer_norm",
              "opt": "model.decoder.final_layer_norm"}  # every other family: model.norm


def reference_logit_lens(lm, residual: torch.Tensor) -> torch.Tensor:
    """Final norm and unembedding by the model's own modules, named here per family (not through the
    adapter): OPT's `project_out` after the norm, Gemma-2/3's final soft-capping after the head."""
    model = lm.model
    kind = model.config.model_type
    with torch.no_grad():
        state = model.get_submodule(FINAL_NORM.get(kind, "model.norm"))(residual)
        if kind == "opt" and model.model.decoder.project_out is not None:
            state = model.model.decoder.project_out(state)
        logits = model.get_output_embeddings()(state)
        cap = getattr(model.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits


def single_token_prompt(lm) -> str:
    """A text that encodes to exactly one token after `<s>`."""
    for token_id in range(3, 200):
        text = lm.token_str(token_id)
        if text.strip() and len(lm.encode(text)) == 2:
            return text
    raise AssertionError("no single-token text found")


@pytest.mark.parametrize("family", FAMILIES)
def test_last_layer_equals_model_logits(tiny_lms, family):
    lm = tiny_lms[family]
    res = sv.analyze(lm, PROMPT, without_bos=True)
    out = plain_forward(lm, res.token_ids)
    logits = out.logits[0]
    # the adapter's head reproduces the model's own logits from hidden_states[L] ...
    torch.testing.assert_close(lm.adapter.head(out.hidden_states[-1][0]), logits, atol=1e-4, rtol=1e-4)
    # ... and the logit lens at layer L is the model's distribution at every position
    np.testing.assert_allclose(res.logit_lens.entropy[-1], entropy(logits).numpy(), atol=1e-4)
    np.testing.assert_array_equal(res.logit_lens.top1[-1], logits.argmax(-1).numpy())
    np.testing.assert_allclose(res.logit_lens.kl_to_final[-1], 0.0, atol=1e-5)
    # SPADE at layer L is the model's output at the answer position
    for name in ("spade", "spade_no_bos"):
        assert res.answer[name].kl_to_final[-1, 0] < 1e-5
        assert res.answer[name].top1[-1, 0] == logits[-1].argmax()


@pytest.mark.parametrize("family", FAMILIES)
def test_logit_lens_is_final_norm_then_unembedding(tiny_lms, family):
    """Below L the logit lens decodes raw residuals through the model's final norm and head."""
    lm = tiny_lms[family]
    res = sv.analyze(lm, PROMPT)
    out = plain_forward(lm, res.token_ids)
    for layer in range(lm.num_layers):
        logits = reference_logit_lens(lm, out.hidden_states[layer][0])
        np.testing.assert_allclose(res.logit_lens.entropy[layer], entropy(logits).numpy(), atol=1e-4)
        np.testing.assert_array_equal(res.logit_lens.top1[layer], logits.argmax(-1).numpy())
    assert res.logit_lens.kl_to_final[0].mean() > 1e-3  # not trivially the final distribution


@pytest.mark.parametrize("family", FAMILIES)
def test_spade_on_bos_plus_one_token_equals_model_at_every_layer(tiny_lms, family):
    lm = tiny_lms[family]
    res = sv.analyze(lm, single_token_prompt(lm))
    assert len(res.token_ids) == 2 and res.token_ids[0] == lm.bos_id
    spade = res.answer["spade"]
    np.testing.assert_allclose(spade.kl_to_final[:, 0], 0.0, atol=2e-5)
    assert (spade.top1[:, 0] == res.final_answer_id).all()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", ["original", "renumbered"])
def test_fast_spade_equals_plain_definition(tiny_lms, family, mode):
    lm = tiny_lms[family]
    res = sv.analyze(lm, PROMPT, spade_positions=mode, without_bos=True)
    out = plain_forward(lm, res.token_ids)
    for name, with_bos in (("spade", True), ("spade_no_bos", False)):
        fast = res.answer_states[name]
        for layer in range(lm.num_layers):
            ref = spade_reference(lm, out.hidden_states, res.token_ids, layer, mode, with_bos)
            torch.testing.assert_close(fast[layer], ref, atol=2e-4, rtol=2e-4)
    # and the two differ from each other and from the logit lens: the test has teeth
    assert not torch.allclose(res.answer_states["spade"][0], res.answer_states["spade_no_bos"][0], atol=1e-3)


@pytest.mark.parametrize("family", FAMILIES)
def test_spade_without_bos_added_later_equals_computed_at_once(tiny_lms, family):
    """The ablation costs a second SPADE pass, so `analyze` leaves it out unless asked; added
    afterwards from the kept states it is the same, and retargets like the rest."""
    lm = tiny_lms[family]
    eager = sv.analyze(lm, PROMPT, without_bos=True)
    plain = sv.analyze(lm, PROMPT)
    assert plain.decoders == ["logit_lens", "spade"]
    later = sv.with_spade_no_bos(lm, plain)
    assert sv.with_spade_no_bos(lm, later) is later
    torch.testing.assert_close(later.answer_states["spade_no_bos"], eager.answer_states["spade_no_bos"])
    for field in ("top_ids", "entropy", "kl_to_final", "target_rank"):
        np.testing.assert_allclose(getattr(later.answer["spade_no_bos"], field),
                                   getattr(eager.answer["spade_no_bos"], field), atol=1e-5)
    other = int(later.answer["spade"].top_ids[-1, 0, 1])
    np.testing.assert_allclose(sv.retarget(lm, later, f"#{other}").answer["spade_no_bos"].target_prob,
                               sv.retarget(lm, eager, f"#{other}").answer["spade_no_bos"].target_prob, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_spade_layer0_equals_model_on_bos_and_answer_token(tiny_lms, family):
    lm = tiny_lms[family]
    res = sv.analyze(lm, PROMPT)
    answer = res.answer_position
    out = plain_forward(lm, [lm.bos_id, res.token_ids[-1]], positions=[0, answer])
    expected = entropy(out.logits[0, -1])
    assert res.answer["spade"].entropy[0, 0] == pytest.approx(float(expected), abs=1e-4)
    assert res.answer["spade"].top1[0, 0] == out.logits[0, -1].argmax()


def random_lenses(lm) -> dict[str, AffineLens]:
    torch.manual_seed(1)
    dim = lm.model.config.hidden_size
    lenses = {}
    for kind in ("tuned_lens", "linear_spade"):
        lens = AffineLens.identity(kind, lm.num_layers, dim, lens_meta(lm))
        lens.weight += 0.1 * torch.randn_like(lens.weight)
        lens.bias += 0.1 * torch.randn_like(lens.bias)
        lenses[kind] = lens
    return lenses


def test_target_statistics_and_retarget(tiny_lm):
    lenses = random_lenses(tiny_lm)
    res = sv.analyze(tiny_lm, PROMPT, lenses=lenses, without_bos=True)
    assert res.decoders == ["logit_lens", "tuned_lens", "spade", "spade_no_bos", "linear_spade"]
    assert list(res.grids) == ["logit_lens", "tuned_lens"]
    spade = res.answer["spade"]
    assert (spade.target_rank[-1] == 1).all()  # default target = final top-1
    other = int(spade.top_ids[-1, 0, 1])
    direct = sv.analyze(tiny_lm, PROMPT, target=f"#{other}", lenses=lenses, without_bos=True)
    moved = sv.retarget(tiny_lm, res, f"#{other}")
    assert direct.target_id == moved.target_id == other
    assert moved.decoders == direct.decoders
    for name in direct.answer:
        np.testing.assert_allclose(direct.answer[name].target_prob, moved.answer[name].target_prob, rtol=1e-4)
        np.testing.assert_array_equal(direct.answer[name].target_rank, moved.answer[name].target_rank)
        np.testing.assert_allclose(direct.answer[name].entropy, res.answer[name].entropy, rtol=1e-5)
    for name in direct.grids:
        np.testing.assert_allclose(direct.grids[name].target_prob, moved.grids[name].target_prob, rtol=1e-4)
    assert (direct.answer["spade"].target_rank[-1] == 2).all()


def test_bad_prompts_and_settings(tiny_lm):
    for prompt in ("", "   \n"):
        with pytest.raises(sv.InputError, match="empty"):
            sv.analyze(tiny_lm, prompt)
    with pytest.raises(sv.InputError, match="limit is 8"):
        sv.analyze(tiny_lm, "word " * 20, max_tokens=8)
    with pytest.raises(sv.InputError, match="limit is 256"):  # the model's own context
        sv.analyze(tiny_lm, "word " * 400, max_tokens=10_000)
    with pytest.raises(sv.InputError):
        sv.analyze(tiny_lm, PROMPT, spade_positions="sideways")
    with pytest.raises(sv.InputError):
        sv.analyze(tiny_lm, PROMPT, top_k=0)
    with pytest.raises(sv.InputError, match="outside the vocabulary"):
        sv.analyze(tiny_lm, PROMPT, target="#99999")


def test_json_contract(tiny_lm):
    res = sv.analyze(tiny_lm, PROMPT, top_k=3)
    data = res.to_dict()
    layers = tiny_lm.num_layers
    assert data["num_layers"] == layers and data["tokens"] == res.tokens
    assert data["answer_position"] == len(res.tokens) - 1
    assert [row["layer"] for row in data["layers"]] == list(range(layers + 1))
    for row in data["layers"]:
        for decoder in ("logit_lens", "spade"):
            cell = row[decoder]
            assert set(cell) == {"top", "entropy", "target_prob", "target_rank", "kl_to_final"}
            assert len(cell["top"]) == 3 and set(cell["top"][0]) == {"token", "prob"}
    assert len(data["grid"]) == layers + 1 and len(data["grid"][0]) == len(res.tokens)
    assert set(data["grid"][0][0]) == {"top1", "prob", "entropy"}
    frame = res.to_frame()
    assert set(frame.decoder) == {"logit_lens", "spade"}
    assert len(frame[frame.decoder == "logit_lens"]) == (layers + 1) * len(res.tokens)


# --- the real default model -------------------------------------------------------------------

SHOTS = "France: Paris\nJapan: Tokyo\nItaly: Rome\nEgypt: Cairo\n"
CAPITALS = {"Germany": " Berlin", "Spain": " Madrid", "Russia": " Moscow", "Greece": " Athens",
            "Austria": " Vienna", "Portugal": " Lisbon"}


@pytest.mark.slow
def test_default_model_invariants(default_lm):
    res = sv.analyze(default_lm, SHOTS + "Germany:")
    out = plain_forward(default_lm, res.token_ids)
    np.testing.assert_allclose(res.logit_lens.entropy[-1], entropy(out.logits[0]).numpy(), atol=1e-3)
    assert res.answer["spade"].kl_to_final[-1, 0] < 1e-4
    for layer in (0, 12, 24, 29):
        ref = spade_reference(default_lm, out.hidden_states, res.token_ids, layer)
        torch.testing.assert_close(res.answer_states["spade"][layer], ref, atol=1e-3, rtol=1e-3)
    one = sv.analyze(default_lm, "Paris")
    assert len(one.token_ids) == 2
    assert one.answer["spade"].kl_to_final.max() < 1e-3


@pytest.mark.slow
def test_default_model_spade_finds_capitals_layers_before_logit_lens(default_lm):
    """The picture the app exists to show (docs/method.md): SPADE recovers the answer ~6 layers early."""
    early_spade = late_lens = 0
    for country, capital in CAPITALS.items():
        res = sv.analyze(default_lm, f"{SHOTS}{country}:", without_bos=False)
        gold = default_lm.encode(capital)[1]
        if res.final_answer_id != gold:
            continue
        spade_hits = res.answer["spade"].top1[24:, 0] == gold
        lens_hits = res.logit_lens.top1[:27, res.answer_position] == gold
        early_spade += spade_hits.mean() >= 0.8
        late_lens += not lens_hits.any()
    assert early_spade >= 4, early_spade
    assert late_lens >= 4, late_lens


@pytest.mark.parametrize("shape, final_shape", [((3, 4, 50), (4, 50)), ((6, 50), (50,)), ((2, 1, 50), (1, 50))])
def test_distribution_stats_equal_the_plain_formulas(shape, final_shape):
    """The few-pass statistics (einsum row products, int32 rank count) against the textbook ones."""
    from spade_viz.lenses.stats import distribution_stats

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(shape, generator=gen) * 3
    final = torch.log_softmax(torch.randn(final_shape, generator=gen) * 3, -1)
    target = torch.tensor(7)
    got = distribution_stats(logits, final, target, k=3)
    logp = torch.log_softmax(logits, -1)
    p = logp.exp()
    np.testing.assert_allclose(got["entropy"], -(p * logp).sum(-1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["kl_to_final"], (final.exp() * (final - logp)).sum(-1).clamp_min(0),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["target_prob"], p[..., 7], rtol=1e-6)
    np.testing.assert_array_equal(got["target_rank"], (logp > logp[..., 7:8]).sum(-1) + 1)
    np.testing.assert_array_equal(got["top_ids"], logp.topk(3, -1).indices)
    # per-row targets, some inside the top-k (ranked from it) and some outside (counted)
    targets = torch.where(torch.rand(shape[:-1], generator=gen) < 0.5, logp.topk(3, -1).indices[..., 1], 7)
    ranks = distribution_stats(logits, final, targets, k=3)["target_rank"]
    np.testing.assert_array_equal(ranks, (logp > logp.gather(-1, targets.unsqueeze(-1))).sum(-1) + 1)
