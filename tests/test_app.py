"""Streamlit AppTest: the landing page and the Explore page (tiny model, then the real default model).

The tiny model is picked the way a user would: "Other…" in the sidebar and its folder in the text box.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import spade_viz as sv
from apptest import open_page
from spade_viz import viz
from spade_viz.app import analyses, datasets, models

ROOT = Path(__file__).resolve().parent.parent
EXPLORE = str(ROOT / "pages" / "explore.py")
TIMEOUT = 180


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def _specs(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def _explore(folder: Path | None) -> AppTest:
    at = open_page("pages/explore.py", TIMEOUT)
    if folder is not None:
        at.session_state["sv_model"] = models.OTHER
        at.session_state["sv_model_path"] = str(folder)
    return at.run()


@pytest.fixture(scope="module")
def tiny_folder(tiny_folders) -> Path:
    return tiny_folders["llama"]


def test_landing_page_explains_and_links(tiny_folder):
    at = open_page(None, TIMEOUT)
    at.session_state["sv_model"] = models.OTHER
    at.session_state["sv_model_path"] = str(tiny_folder)
    at.run()
    assert not at.exception
    assert "spade-viz" in at.title[0].value
    intro = next(m.value for m in at.markdown if "SPADE" in m.value)
    assert "logit lens" in intro.lower() and "<s>" in intro
    labels = [link.proto.label for link in at.main.get("page_link")]
    assert labels[0] == "See it on Explore"  # the tour's first step links the page that shows it
    assert len(labels) == 4 and labels[1].startswith("**Explore**: one prompt, every layer")
    assert at.sidebar.selectbox(key="sv_model").value == models.OTHER
    assert any("layers" in c.value for c in at.sidebar.caption)  # the loaded model's summary


def test_the_pages_are_declared_once_and_keep_their_addresses():
    """`app.py` hands `pages.PAGES` to `st.navigation`; the addresses are those of the old links."""
    from spade_viz.app import pages

    assert [p.url_path for p in pages.PAGES] == ["", "Explore", "Early_exit", "Compare_decoders"]
    assert [p.title for p in pages.PAGES] == ["Home", "Explore", "Early exit", "Compare decoders"]
    assert all((ROOT / p.path).is_file() for p in pages.PAGES)
    assert sorted(p.name for p in (ROOT / "pages").glob("*.py")) == sorted(Path(p.path).name for p in pages.PAGES)
    app = (ROOT / "app.py").read_text()
    assert "pages.navigation()" in app and ".run()" in app
    assert not (ROOT / ".streamlit" / "config.toml").exists()  # Streamlit's own page list is on


def test_model_picked_in_the_sidebar_text_box(tiny_folder):
    at = open_page("pages/explore.py", TIMEOUT)
    at.session_state["sv_model"] = models.OTHER
    at.run()
    assert not at.exception and not _errors(at)
    assert not at.get("plotly_chart")  # nothing typed yet: no model, no analysis, no error
    assert at.text_area(key="prompt").value == datasets.presets()[0].text  # the box is filled anyway
    at.sidebar.text_input(key="sv_model_path").input(str(tiny_folder)).run()
    assert not at.exception and not _errors(at)
    assert len(at.get("plotly_chart")) == 4


def test_explore_renders_both_heatmaps_and_curves(tiny_folder, tiny_lm):
    at = _explore(tiny_folder)
    assert not at.exception and not _errors(at)
    heat_positions, heat_answer, entropy, target = _specs(at)
    layers = tiny_lm.num_layers + 1
    res = sv.analyze(tiny_lm, datasets.presets()[0].text)
    assert heat_positions["data"][0]["type"] == "heatmap"
    assert len(heat_positions["data"][0]["y"]) == layers
    assert len(heat_positions["data"][0]["x"]) == min(len(res.tokens), 14)  # a readable window
    assert len(heat_answer["data"][0]["y"]) == layers
    assert heat_answer["layout"]["xaxis"]["ticktext"] == ["logit lens", "SPADE"]
    assert {t["legendgroup"] for t in entropy["data"]} == {"logit_lens", "spade"}
    assert target["layout"]["yaxis2"]["type"] == "log"
    assert at.slider(key="window_start").value == len(res.tokens) - 14  # window ends at the answer
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels[:2] == ["Analysis · CSV", "Analysis · JSON"] and sum("HTML" in x for x in labels) == 4
    # the ablation is computed when asked for, and is the one `analyze` computes at once
    at.checkbox(key="show_no_bos").check().run()
    assert not at.exception and not _errors(at)
    heat_answer, entropy = _specs(at)[1:3]
    assert heat_answer["layout"]["xaxis"]["ticktext"] == ["logit lens", "SPADE", "SPADE without &lt;s&gt;"]
    ablation = next(t for t in entropy["data"] if t["legendgroup"] == "spade_no_bos")["y"]
    if isinstance(ablation, dict):  # plotly's packed array: {"dtype": ..., "bdata": base64}
        ablation = np.frombuffer(base64.b64decode(ablation["bdata"]), dtype=ablation["dtype"])
    eager = sv.analyze(tiny_lm, datasets.presets()[0].text, without_bos=True).answer["spade_no_bos"].entropy[:, 0]
    np.testing.assert_allclose(ablation, eager, atol=1e-4)


@pytest.mark.slow
def test_presets_fill_the_box_and_analyse(tiny_folder):
    at = _explore(tiny_folder)
    for preset in datasets.presets()[1:]:
        at.selectbox(key="preset").select(preset.name).run()
        assert not at.exception and not _errors(at), preset.name
        assert at.text_area(key="prompt").value == preset.text
        assert len(at.get("plotly_chart")) == 4
    # the user can then edit the text: committing it (Ctrl+Enter, or leaving the box) analyses it
    at.text_area(key="prompt").input("Apples are red.\nBananas are").run()
    assert not _errors(at) and at.session_state["_sv_explore"].request == "Apples are red.\nBananas are"
    assert _specs(at)[0]["layout"]["xaxis"]["ticktext"][-1] == "<b>e</b>"  # the new prompt's last token, bold
    at.button(key="run").click().run()  # the button analyses the same text: nothing changes
    assert not _errors(at) and at.text_area(key="prompt").value == "Apples are red.\nBananas are"


@pytest.mark.slow
def test_view_changes_do_not_rerun_the_model(tiny_folder, tiny_lm):
    at = _explore(tiny_folder)
    runs, loads = analyses.ANALYSIS_RUNS, models.MODEL_LOADS
    for metric in ["top1_prob", "kl_to_final", "target_prob", "entropy"]:
        at.selectbox(key="metric").select(metric).run()
        assert not at.exception
        title = _specs(at)[0]["data"][0]["colorbar"]["title"]["text"]  # the label, then why the scale stops
        assert title.split("<br>")[0] == viz.METRICS[metric].label
    options = at.selectbox(key="target").options
    res = sv.analyze(tiny_lm, datasets.presets()[0].text)
    second = int(res.answer["logit_lens"].top_ids[-1, 0, 1])
    at.selectbox(key="target").set_value(f"#{second}").run()
    assert not at.exception and not _errors(at)
    assert at.selectbox(key="target").value == f"#{second}"
    shown = html.escape(viz.visible_token(res.token(second), max_len=24), quote=False)
    assert shown in _specs(at)[3]["layout"]["title"]["text"]  # the target curves follow the new target
    at.checkbox(key="show_no_bos").uncheck().run()
    assert _specs(at)[1]["layout"]["xaxis"]["ticktext"] == ["logit lens", "SPADE"]
    at.slider(key="window_start").set_value(0).run()
    assert _specs(at)[0]["data"][0]["x"][0] == 0
    assert analyses.ANALYSIS_RUNS == runs, "a view change re-ran the model"
    assert models.MODEL_LOADS == loads, "the cached model was loaded again"
    assert len(options) >= 3
    # a model option does re-run it, once; going back is served from the cache
    at.radio(key="spade_positions").set_value("renumbered").run()
    assert analyses.ANALYSIS_RUNS == runs + 1
    at.radio(key="spade_positions").set_value("original").run()
    assert analyses.ANALYSIS_RUNS == runs + 1


def test_other_target_token_by_text(tiny_folder, tiny_lm):
    at = _explore(tiny_folder)
    at.selectbox(key="target").set_value("other").run()
    at.text_input(key="target_text").input("Paris").run()
    assert not at.exception and not _errors(at)
    # the tiny tokenizer splits "Paris": the target is its first token, and the page says which
    first = tiny_lm.tokenizer("Paris", add_special_tokens=False).input_ids[0]
    assert f"id {first}" in " ".join(c.value for c in at.caption)
    assert viz.visible_token(tiny_lm.token_str(first)) in _specs(at)[3]["layout"]["title"]["text"]
    # a token outside the vocabulary: a clear message, the views stay (on the default target)
    at.text_input(key="target_text").input("#999999").run()
    assert not at.exception
    assert any("outside the vocabulary" in e for e in _errors(at))
    assert len(at.get("plotly_chart")) == 4


def test_error_paths_keep_the_prompt_and_the_page(tiny_folder):
    at = _explore(tiny_folder)
    # empty prompt
    at.text_area(key="prompt").input("   ").run()
    at.button(key="run").click().run()
    assert not at.exception
    assert any("prompt is empty" in e for e in _errors(at))
    # over the configurable token limit
    long_prompt = "one two three four five six seven eight nine ten"
    at.number_input(key="max_tokens").set_value(8).run()
    at.text_area(key="prompt").input(long_prompt).run()
    at.button(key="run").click().run()
    assert not at.exception
    assert any("the limit is 8" in e for e in _errors(at))
    assert at.text_area(key="prompt").value == long_prompt
    # a model that fails to load: a clear message, the prompt stays, the page still works
    at.sidebar.text_input(key="sv_model_path").input("/no/such/model/folder").run()
    assert not at.exception
    assert any("could not be loaded" in e and "no such folder" in e for e in _errors(at))
    assert at.text_area(key="prompt").value == long_prompt
    assert at.button(key="run").disabled
    at.selectbox(key="preset").select(datasets.presets()[2].name).run()  # still usable
    assert at.text_area(key="prompt").value == datasets.presets()[2].text
    # back to a good model: everything renders again
    at.number_input(key="max_tokens").set_value(512)
    at.sidebar.text_input(key="sv_model_path").input(str(tiny_folder)).run()
    assert not at.exception and not _errors(at)
    assert len(at.get("plotly_chart")) == 4


@pytest.mark.slow
def test_explore_on_the_default_model():
    at = _explore(None)
    assert not at.exception and not _errors(at)
    heat_positions, heat_answer, *_ = _specs(at)
    assert len(heat_positions["data"][0]["y"]) == 31 == len(heat_answer["data"][0]["y"])
    summary = next(m.value for m in at.markdown if "layers." in m.value)
    assert "Berlin" in summary  # the capitals preset: the model answers ' Berlin'
    res = analyses.analysis(next(iter(models.model_pool(1).models.values())), datasets.presets()[0].text)
    assert res.first_stable_layer("spade") < res.first_stable_layer("logit_lens")


def test_saved_lenses_add_decoder_columns(tiny_folder, tiny_lm, tmp_path, monkeypatch):
    """When a tuned lens / linear SPADE is saved for the model, its columns and curves appear."""
    from spade_viz.lenses.affine import AffineLens, default_lens_path, lens_meta

    monkeypatch.setenv("SPADE_VIZ_CACHE", str(tmp_path))
    dim = tiny_lm.model.config.hidden_size
    for kind in ("tuned_lens", "linear_spade"):
        lens = AffineLens.identity(kind, tiny_lm.num_layers, dim, meta=lens_meta(tiny_lm))
        lens.save(default_lens_path(tiny_lm, kind))
    at = _explore(tiny_folder)
    assert not at.exception and not _errors(at)
    answer = _specs(at)[1]
    assert answer["layout"]["xaxis"]["ticktext"] == ["logit lens", "tuned lens", "SPADE", "linear SPADE"]
    assert len({t["legendgroup"] for t in _specs(at)[2]["data"]}) == 4


def test_model_pool_holds_one_model_and_frees_the_old(tiny_folders):
    """One resident model; another replaces it only once loaded, so a failed load leaves it in place."""
    import gc
    import weakref

    pool = models.ModelPool(capacity=1)
    first_key = (str(tiny_folders["llama"]), "cpu", "fp32")
    first = pool.get(first_key, progress=lambda done, total, message: None)
    assert pool.get(first_key, progress=lambda done, total, message: None) is first  # cached, not reloaded
    gone = weakref.ref(first.model)
    del first
    second_key = (str(tiny_folders["qwen2"]), "cpu", "fp32")
    second = pool.get(second_key, progress=lambda done, total, message: None)
    gc.collect()
    assert gone() is None, "the previous model is still in memory"
    assert list(pool.models.items()) == [(second_key, second)]
    with pytest.raises(sv.ModelLoadError):
        pool.get(("/no/such/model", "cpu", "fp32"), progress=lambda done, total, message: None)
    assert list(pool.models.items()) == [(second_key, second)]


def test_a_model_and_its_analyses_go_without_the_garbage_collector(tiny_folders):
    """The warm start freezes what it holds out of the collector (`app.command.serve`), so a model the pool
    unloads later, and an analysis the store drops, must be freed by their reference counts alone."""
    import gc
    import weakref

    for folder in tiny_folders.values():
        lm = sv.load_model(str(folder), device="cpu")
        res = sv.analyze(lm, "Italy: Rome\nSpain:")
        res.windowed(0, 3, decoders=["logit_lens"])
        sv.read_position(lm, res, 2, pins=["#5"])
        gone = [weakref.ref(x) for x in (lm, lm.model, res)]
        gc.disable()
        try:
            del lm, res
            assert all(ref() is None for ref in gone), folder.name
        finally:
            gc.enable()


def test_model_pool_keeps_the_most_recently_used_within_its_capacity(tiny_folders):
    pool = models.ModelPool(capacity=2)
    keys = [(str(tiny_folders[family]), "cpu", "fp32") for family in ("llama", "qwen2", "gpt2")]
    first, second = (pool.get(key, progress=lambda done, total, message: None) for key in keys[:2])
    assert pool.resident(keys[0]) is first  # now the most recently used: the second goes next
    pool.get(keys[2], progress=lambda done, total, message: None)
    assert list(pool.models) == [keys[0], keys[2]]


def test_another_page_can_send_a_prompt_to_explore(tiny_folder):
    """The contract behind `pages.send_to_explore`: this key, set before Explore runs."""
    from spade_viz.app.pages import SENT_PROMPT

    at = open_page("pages/explore.py", TIMEOUT)
    at.session_state["sv_model"] = models.OTHER
    at.session_state["sv_model_path"] = str(tiny_folder)
    at.session_state[SENT_PROMPT] = "Italy: Rome\nSpain:"
    at.run()
    assert not at.exception and not _errors(at)
    assert at.text_area(key="prompt").value == "Italy: Rome\nSpain:"
    assert "␣Rome" in _specs(at)[0]["layout"]["xaxis"]["ticktext"]


def test_a_first_visit_computes_the_window_in_view_only_and_reads_no_cell(tiny_folder, tiny_lm):
    """A long prompt's grid is computed for the window shown, not the whole prompt: the answer heatmap's
    colour bar reads the same window as the heatmap beside it (a class opening long presets pays for 14
    positions each, not for every one); no cell open and nothing pinned: no position is read in full."""
    from spade_viz.app import explorations
    from spade_viz.app.pages import SENT_PROMPT

    prompt = " ".join(f"word{i}" for i in range(16)) + " and"
    at = open_page("pages/explore.py", TIMEOUT)
    at.session_state["sv_model"] = models.OTHER
    at.session_state["sv_model_path"] = str(tiny_folder)
    at.session_state[SENT_PROMPT] = prompt
    readings = explorations.RUNS["reading"]
    at.run()
    assert not at.exception and not _errors(at)
    assert explorations.RUNS["reading"] == readings
    lm = models.model_pool(1).resident((str(tiny_folder), "auto", "fp32"))
    grid = analyses.analysis(lm, prompt).grid("logit_lens")
    n = grid.num_positions
    assert n > grid.store.width + 14 and grid.is_filled(n - 14, n)  # the window ending at the answer is drawn
    assert not grid.is_filled(0, 1)  # the prompt's start (another chunk) is not computed until slid to
    assert len(_specs(at)) == 4


def test_a_second_session_on_the_same_prompt_builds_no_figure(tiny_folder):
    """A class opening one preset: the second visitor's figures are the first one's (`analyses.figures`),
    and nothing is analysed again."""
    first = _explore(tiny_folder)
    assert not first.exception and not _errors(first)
    kept = dict(analyses._analysis_store().figures)
    runs = analyses.ANALYSIS_RUNS
    second = _explore(tiny_folder)
    assert not second.exception and not _errors(second)
    assert analyses.ANALYSIS_RUNS == runs
    now = analyses._analysis_store().figures
    assert kept and set(now) == set(kept)  # no view added: the second session drew the kept figures
    assert all(now[key] is value for key, value in kept.items())  # none rebuilt
    assert [c.proto.spec for c in second.get("plotly_chart")] == [c.proto.spec for c in first.get("plotly_chart")]
