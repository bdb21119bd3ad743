"""AppTest of the Compare-decoders page on a tiny model: train a tuned lens in the page (progress bar,
saved for the model), run the comparison on a built-in task, and see all four decoders."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from apptest import open_page
from spade_viz.app import models

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 300
PAGE = "pages/compare_decoders.py"


def _page(folder: Path) -> AppTest:
    at = open_page(PAGE, TIMEOUT)
    at.session_state["sv_model"] = models.OTHER
    at.session_state["sv_model_path"] = str(folder)
    return at


def _ok(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def test_train_tuned_lens_and_compare_four_decoders(tiny_folders, isolated_cache):
    at = _page(tiny_folders["llama"])
    at.run()
    _ok(at)
    assert any("No tuned lens is saved" in i.value for i in at.info)
    at.number_input(key="cd_prompts").set_value(5)
    at.number_input(key="cd_tokens").set_value(12)
    at.number_input(key="cd_steps").set_value(10)
    at.button(key="cd_train").click().run()
    _ok(at)
    assert any("A tuned lens is saved for this model" in s.value for s in at.success)
    assert list(isolated_cache.glob("lenses/*/tuned_lens.safetensors"))
    assert len(at.get("plotly_chart")) == 1  # the held-out KL figure (in a closed expander)

    at.selectbox(key="cd_task").set_value("capitals")
    at.number_input(key="cd_limit").set_value(10)
    at.run()
    _ok(at)
    at.button(key="cd_run").click().run()
    _ok(at)
    table = at.dataframe[0].value
    assert list(table["decoder"]) == ["logit lens", "tuned lens", "SPADE", "linear SPADE"]
    assert len(at.get("plotly_chart")) >= 1
    assert at.button(key="cd_run").disabled  # the result is kept: no second run for the same inputs


def test_page_without_model_or_lens_explains(tiny_folders, isolated_cache):
    at = open_page(PAGE, TIMEOUT)
    at.session_state["sv_model"] = models.OTHER
    at.session_state["sv_model_path"] = "/no/such/folder"
    at.run()
    assert not at.exception, at.exception
    assert any("Load a model" in i.value for i in at.info)

    at = _page(tiny_folders["gpt2"])
    at.run()
    _ok(at)
    at.selectbox(key="cd_task").set_value("antonyms")
    at.number_input(key="cd_limit").set_value(8)
    at.run()
    at.button(key="cd_run").click().run()
    _ok(at)
    assert list(at.dataframe[0].value["decoder"]) == ["logit lens", "SPADE", "linear SPADE"]
    assert any("Not in this comparison: tuned lens" in c.value for c in at.caption)
