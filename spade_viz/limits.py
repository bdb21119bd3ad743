"""The default token limit, in one place: an analysis, a sweep, a fit and the CLI read it from here.

Plain Python at the bottom layer, so every other module may import it.
"""

# tokens of one prompt an analysis or a sweep reads unless the user sets another: an analysis is
# answer first (one forward pass, then one column; the grids by window), so 2048 tokens paint
# their first view in seconds on 2 cores (bench/analyze.py --first-views)
DEFAULT_TOKEN_LIMIT = 2048
