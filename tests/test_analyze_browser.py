"""Long prompts in a real browser: on the README's warm server, chromium presses Analyze on a 15-token
and a 2000-token prompt (the default limit is 2048) through `bench/analyze_browser.py`; both show their
final answer and first heatmap with no error, and the answers equal `sv.analyze`'s. (Its times are the
bench's business: no timing is asserted.)"""

from __future__ import annotations

import sys

import pytest

from browser import CHROMIUM, ROOT, chromium_available

sys.path.insert(0, str(ROOT / "bench"))

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not chromium_available(), reason=f"{CHROMIUM} is not installed")]


def test_a_2000_token_prompt_analysed_in_chromium(cache_without_lenses):
    import analyze_browser

    found = analyze_browser.run([15, 2000], reps=1)
    assert found["errors"] == []
    assert sorted(len(times) for times in found["times"].values()) == [1, 1]
    assert [line.split(" tokens")[0] for _, line in found["shown"]] == ["15", "2000"]
    assert analyze_browser.answers_differ(found) == []
