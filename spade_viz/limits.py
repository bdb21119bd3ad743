"""The default token limit, in one place: an analysis, a sweep, a fit and the CLI read it from here.

Plain Python at the bottom layer, so every other module may import it.
"""

DEFAULT_TOKEN_LIMIT = 512  # tokens of one prompt an analysis or a sweep reads unless the user sets another
