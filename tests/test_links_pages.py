"""Shareable links on the pages (AppTest, tiny model): a link restores the view, the page writes its
state into the URL, a bad link gives a message and the defaults, another model waits for a click."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from apptest import open_page
from spade_viz import viz
from spade_viz.app import analyses, datasets, links, models

ROOT = Path(__file__).resolve().parent.parent
EXPLORE = str(ROOT / "pages" / "explore.py")
PARAMS = links.explore_params([p.name for p in datasets.presets()], list(viz.METRICS), analyses.DEFAULT_MAX_TOKENS)


def _explore(folder: Path, query: dict) -> AppTest:
    at = open_page("pages/explore.py", 180)
    at.session_state["sv_model"] = models.OTHER
    at.session_state["sv_model_path"] = str(folder)
    for key, value in query.items():
        at.query_params[key] = value
    return at.run()


def _specs(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


@pytest.fixture(scope="module")
def folder(tiny_folders) -> Path:
    return tiny_folders["llama"]


def test_a_link_restores_the_prompt_and_the_view(folder):
    preset = datasets.presets()[2]
    at = _explore(folder, {"preset": preset.name, "metric": "top1_prob", "nobos": "0", "pos": "renumbered"})
    assert not at.exception and not at.error and not at.warning
    assert at.text_area(key="prompt").value == preset.text
    assert at.selectbox(key="metric").value == "top1_prob"
    assert at.radio(key="spade_positions").value == "renumbered"
    assert not at.checkbox(key="show_no_bos").value
    heat_positions, heat_answer, *_ = _specs(at)
    assert heat_answer["layout"]["xaxis"]["ticktext"] == ["logit lens", "SPADE"]
    assert heat_positions["data"][0]["colorbar"]["title"]["text"] == viz.METRICS["top1_prob"].label
    # the page keeps its state in the URL, and the "Copy link" box shows it
    assert links.decode(dict(at.query_params), PARAMS).state["metric"] == "top1_prob"
    at.selectbox(key="metric").select("kl_to_final").run()
    assert at.query_params["metric"] == ["kl_to_final"] or at.query_params["metric"] == "kl_to_final"
    shown = " ".join(c.value for c in at.code)
    assert "metric=kl_to_final" in shown and "preset=" in shown


def test_a_typed_prompt_and_target_come_back(folder, tiny_lm):
    import spade_viz as sv

    prompt = "Italy: Rome\nSpain:"
    second = int(sv.analyze(tiny_lm, prompt).answer["logit_lens"].top_ids[-1, 0, 1])
    query = links.encode({"prompt": prompt, "target": f"#{second}"}, PARAMS)
    at = _explore(folder, query)
    assert not at.exception and not at.error
    assert at.text_area(key="prompt").value == prompt
    assert at.selectbox(key="target").value == f"#{second}"
    at = _explore(folder, {"prompt": prompt, "target": "Paris"})  # a token's text: 'another token…'
    assert at.selectbox(key="target").value == "other" and at.text_input(key="target_text").value == "Paris"


def test_a_bad_link_says_so_and_shows_the_defaults(folder):
    at = _explore(folder, {"metric": "colour", "tokens": "many", "preset": datasets.presets()[1].name})
    assert not at.exception and not at.error
    message = " ".join(w.value for w in at.warning)
    assert "could not be used" in message and "colour metric" in message and "token limit" in message
    assert at.selectbox(key="metric").value == "entropy"
    assert at.text_area(key="prompt").value == datasets.presets()[1].text  # the good part is kept
    assert len(at.get("plotly_chart")) == 4


def test_a_link_to_another_model_waits_for_a_click(folder):
    loads = models.MODEL_LOADS
    at = open_page("pages/explore.py", 180)
    at.query_params["model"] = "/no/such/linked/model"
    at.query_params["preset"] = datasets.presets()[1].name
    at.session_state["sv_model"] = models.OTHER  # what this visitor's sidebar has: kept, not replaced
    at.session_state["sv_model_path"] = str(folder)
    at.run()
    assert not at.exception and not at.error
    assert "/no/such/linked/model" in " ".join(i.value for i in at.sidebar.info)
    assert at.sidebar.text_input(key="sv_model_path").value == str(folder)
    assert len(at.get("plotly_chart")) == 4  # the page works on the model the sidebar has
    assert "model=" in " ".join(c.value for c in at.code)  # re-shared, the link still names its model
    at.sidebar.button(key="sv_link_load").click().run()  # only now: loading it is tried (and fails here)
    assert at.sidebar.text_input(key="sv_model_path").value == "/no/such/linked/model"
    assert any("could not be loaded" in e.value for e in at.error)
    assert models.MODEL_LOADS == loads


def _slider_value(at) -> float:
    """The threshold the page told the in-browser slider to show."""
    (component,) = at.get("component_instance")
    return json.loads(component.proto.json_args)["value"]


def test_early_exit_link_restores_task_limit_layout_and_threshold(tiny_folders, isolated_cache):
    query = {"task": "capitals", "n": "8", "every": "2", "first": "1", "tau": "0.75", "conf": "spade"}
    at = open_page("pages/early_exit.py", 240)
    at.session_state["sv_model"] = models.OTHER
    at.session_state["sv_model_path"] = str(tiny_folders["llama"])
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception and not at.error
    assert at.selectbox(key="ee_task").value == "capitals" and at.number_input(key="ee_limit").value == 8
    assert "every=2" in " ".join(c.value for c in at.code)  # kept in the link until a sweep shows it
    at.button(key="ee_run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    # the sweep opens at the link's layout and threshold, not at the page's own fastest layout
    assert at.number_input(key="ee_every").value == 2 and at.number_input(key="ee_start").value == 1
    assert at.selectbox(key="ee_conf").value == "spade"
    tau = at.session_state["_ee_page"].tau  # the link's threshold, on the view's threshold grid
    assert abs(tau - 0.75) <= 0.01 and _slider_value(at) == tau
    assert f"Examples at τ = {tau:.3f}" in " ".join(m.value for m in at.markdown)
    written = links.decode(dict(at.query_params), links.exit_params(["capitals"], ["linear_spade", "spade"]))
    assert written.state["tau"] == tau and written.state["every"] == 2 and written.state["limit"] == 8
    # a limit beyond the task's size is brought down to it
    at = open_page("pages/early_exit.py", 240)
    at.query_params["task"], at.query_params["n"] = "capitals", "100000"
    at.session_state["sv_model"] = models.OTHER
    at.session_state["sv_model_path"] = str(tiny_folders["llama"])
    at.run()
    assert not at.exception and at.number_input(key="ee_limit").value == 153


def test_compare_and_landing_pages_have_a_link(tiny_folders):
    at = open_page("pages/compare_decoders.py", 180)
    at.session_state["sv_model"] = models.OTHER
    at.session_state["sv_model_path"] = str(tiny_folders["llama"])
    at.query_params["task"], at.query_params["n"] = "capitals", "5"
    at.run()
    assert not at.exception and not at.error
    assert at.selectbox(key="cd_task").value == "capitals" and at.number_input(key="cd_limit").value == 5
    assert "task=capitals" in " ".join(c.value for c in at.code)
    at.number_input(key="cd_limit").set_value(7).run()
    assert "n=7" in " ".join(c.value for c in at.code)
    home = open_page(None, 180)
    home.session_state["sv_model"] = models.OTHER
    home.session_state["sv_model_path"] = str(tiny_folders["llama"])
    home.run()
    assert not home.exception and any(c.value.startswith("?") or "://" in c.value for c in home.code)


def test_a_link_stays_within_a_servers_limits(tiny_folders, tmp_path, monkeypatch):
    """In server mode a link's token limit or example count past the server's is brought down to it
    (a widget would otherwise reset it to its minimum or default)."""
    settings = tmp_path / "serve.toml"
    settings.write_text(f'models = ["{tiny_folders["llama"]}"]\nmax_prompt_tokens = 64\nmax_sweep_examples = 10\n')
    monkeypatch.setenv("SPADE_VIZ_SERVE", str(settings))
    at = open_page("pages/explore.py", 180)
    at.query_params["tokens"] = "4000"
    at.run()
    assert not at.exception and at.number_input(key="max_tokens").value == 64
    at = open_page("pages/early_exit.py", 180)
    at.query_params["task"], at.query_params["n"] = "capitals", "100"
    at.run()
    assert not at.exception and at.number_input(key="ee_limit").value == 10
