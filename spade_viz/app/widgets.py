"""Widgets bound to a page state's fields: the widget shows the field, and a user's change goes
back into the field (in the widget's change callback, before the page runs again).

Streamlit forgets a widget's value when its page is left; the state object does not, so every run
writes the field into the widget first. A page thus never reads a widget's own value.

    st.number_input("Check every k-th layer", 1, 29, **bind(page, "every", "ee_every"))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import streamlit as st

State = TypeVar("State")


def page_state(key: str, make: Callable[[], State]) -> State:
    """The session's state object for a page (made by `make` on the first visit)."""
    if key not in st.session_state:
        st.session_state[key] = make()
    return st.session_state[key]


def bind(obj, name: str, key: str, then: Callable[[], None] | None = None, show=None, take=None) -> dict:
    """`key=` and `on_change=` for a widget showing `obj.name`. `show`/`take` convert between the
    field and the widget's value; `then` runs after a change is taken in."""
    value = getattr(obj, name)
    st.session_state[key] = show(value) if show else value

    def changed() -> None:
        widget = st.session_state[key]
        setattr(obj, name, take(widget) if take else widget)
        if then is not None:
            then()

    return {"key": key, "on_change": changed}
