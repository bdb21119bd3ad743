"""Shareable links (spade_viz/app/links.py): page state <-> query parameters, with validation."""

from __future__ import annotations

import pytest

from spade_viz.app import links

PRESETS = ["Factual recall: capitals", "Translation", "Repetition / induction"]
METRICS = ["entropy", "top1_prob", "kl_to_final", "target_prob"]
EXPLORE = links.explore_params(PRESETS, METRICS, max_tokens=512)
EXIT = links.exit_params(["antonyms", "capitals"], ["linear_spade", "spade", "logit_lens", "tuned_lens"])


def test_defaults_make_an_empty_link_and_back():
    assert links.encode({}, EXPLORE) == {}
    link = links.decode({}, EXPLORE)
    assert link.state["metric"] == "entropy" and link.state["preset"] == PRESETS[0]
    assert link.state["max_tokens"] == 512 and link.state["show_no_bos"] is False
    assert link.given == set() and link.message() == ""


def test_a_view_round_trips():
    state = {"model": "Qwen/Qwen2.5-0.5B", "preset": "Translation", "prompt": "Äpfel & Birnen?\nx = 1 + 2;",
             "spade_positions": "renumbered", "max_tokens": 64, "show_no_bos": True, "metric": "kl_to_final",
             "target": "#1234", "window_start": 3, "spade_grid": True, "cell": "3,1", "pins": '[" Paris", "#7"]',
             "pin_rank": True, "compare_prompt": "Italy:", "compare_model": "gpt2", "generate": 8}
    query = links.encode(state, EXPLORE)
    assert all(isinstance(v, str) for v in query.values())
    assert query["nobos"] == "1" and query["tokens"] == "64" and query["pos"] == "renumbered"
    link = links.decode(query, EXPLORE)
    assert link.state == state and not link.problems
    assert link.given == set(state)
    # the threshold keeps every digit; the layout is written even where it is the default
    ee = {"task": "capitals", "limit": 24, "tau": 0.1 + 0.2, "every": 1, "start": 7, "continuation_tokens": 2,
          "include_head": False, "confidence": "spade"}
    query = links.encode(ee, EXIT, keep=("every", "start"))
    assert query["every"] == "1" and query["tau"] == repr(0.1 + 0.2)
    assert links.decode(query, EXIT).state == ee


@pytest.mark.parametrize("key, value, why", [
    ("metric", "colour", "not one of entropy"),
    ("tokens", "lots", "not a number"),
    ("tokens", "1", "outside 2..32768"),
    ("nobos", "maybe", "not 1 or 0"),
    ("pos", "sideways", "not one of original, renumbered"),
    ("prompt", "x" * (links.MAX_TEXT + 1), "at most 4,000"),
    ("prompt", "a\x00b", "control characters"),
    ("start", "-3", "outside 0..100000"),
])
def test_a_malformed_link_gives_a_clear_message_and_the_default(key, value, why):
    link = links.decode({key: value, "metric": "top1_prob"} if key != "metric" else {key: value}, EXPLORE)
    assert why in link.message() and link.message().startswith("Part of this link could not be used")
    default = {p.key: p for p in EXPLORE}[key]
    assert link.state[default.name] == default.default
    if key != "metric":
        assert link.state["metric"] == "top1_prob"  # the good parts of the link are kept


def test_threshold_must_be_finite_and_unknown_parameters_are_named():
    link = links.decode({"tau": "nan", "every": "2", "zoom": "3", "embed": "true"}, EXIT)
    assert link.state["tau"] is None and link.state["every"] == 2
    assert "not a finite number" in link.message() and "unknown parameter 'zoom'" in link.message()
    assert "embed" not in link.message()  # Streamlit's own
    assert links.decode({"task": ["antonyms", "capitals"]}, EXIT).state["task"] == "capitals"  # the last wins
    assert links.decode({"cont": "2"}, EXIT).state["continuation_tokens"] == 2  # an int choice reads back as the int


def test_explore_link_state_and_target():
    texts = {"Translation": "English: cat\nFrench:"}
    state = links.explore_link_state({"preset": "Translation", "prompt": "English: cat\nFrench:", "target": "#12",
                                      "target_text": "ignored", "metric": "entropy"}, texts)
    assert state["prompt"] == "" and state["target"] == "#12"
    assert links.encode(state, EXPLORE) == {"preset": "Translation", "target": "#12"}
    edited = links.explore_link_state({"preset": "Translation", "prompt": "English: dog\nFrench:", "target": "other",
                                       "target_text": " chien"}, texts)
    assert edited["prompt"] == "English: dog\nFrench:" and edited["target"] == " chien"
    assert links.explore_link_state({"prompt": "x" * (links.MAX_TEXT + 1), "target": "final"}, texts)["prompt"] == ""
    assert links.explore_target("", ["final", "#5", "other"]) == ("final", "")
    assert links.explore_target("#5", ["final", "#5", "other"]) == ("#5", "")
    assert links.explore_target("#7", ["final", "#5", "other"]) == ("other", "#7")
    assert links.explore_target(" chien", ["final", "#5", "other"]) == ("other", " chien")
