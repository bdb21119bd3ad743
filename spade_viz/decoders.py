"""The decoders and the other series the figures draw: names, labels, colours and order, in one table.

Every page, figure, table and the CLI read labels, colours and order from here, so a decoder
looks the same everywhere (SPADE is orange on every page; the hybrid exit's red is no decoder's).
Plain Python: importing it loads neither torch nor plotly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Decoder:
    """One way to read a layer's hidden state as a next-token distribution."""

    name: str  # the key in results, CSVs and caches
    label: str  # what a reader sees
    colour: str
    order: int  # reading order: lines, columns and table rows follow it
    summary: str  # one line for a student (markdown)
    dash: str = "solid"  # line style of its per-layer curves
    column: int | None = None  # its place in a sweep's columns (CSV rows, `SweepResult.decoders`); None: not swept
    confidence: int | None = None  # its rank among the exit confidences offered (the method first); None: none
    needs_saved_lens: bool = False  # a sweep has it only when a map is saved for the model


@dataclass(frozen=True)
class Series:
    """Something the figures draw that is not a decoder: an exit policy, a reference point, a mark."""

    name: str
    label: str
    colour: str


DECODERS: tuple[Decoder, ...] = (
    Decoder("logit_lens", "logit lens", "#1f77b4", 0,
            "The model's final norm and output matrix applied straight to the layer's state.",
            column=0, confidence=2),
    Decoder("tuned_lens", "tuned lens", "#2ca02c", 1,
            "A small learnt map per layer first, trained to imitate the model's final prediction.",
            column=3, confidence=3, needs_saved_lens=True),
    Decoder("spade", "SPADE", "#e8710a", 2,
            "Keep only the start token `<s>` and the answer token and let the remaining layers finish.",
            column=1, confidence=1),
    Decoder("spade_no_bos", "SPADE without <s>", "#c9a227", 3,
            "SPADE with the answer token alone: the ablation that shows what `<s>` brings.", dash="dash"),
    Decoder("linear_spade", "linear SPADE", "#9467bd", 4,
            "A learnt linear map imitating SPADE: about as cheap as the logit lens.",
            column=2, confidence=0),
)

SERIES: tuple[Series, ...] = (
    Series("hybrid", "hybrid exit (SPADE)", "#d62728"),
    Series("classic", "classic exit (logit lens)", "#7f7f7f"),
    Series("fixed", "SPADE at a fixed layer", "#8c564b"),
    Series("full", "full model", "#111111"),
    Series("oracle", "oracle", "#17becf"),
    # the Explore heatmaps' outline of the answer position and of the settled layers; never drawn
    # beside the exit series, so it may keep the red a reader knows from the hybrid exit
    Series("answer", "answer outline", "#d62728"),
)

_BY_NAME: dict[str, Decoder | Series] = {item.name: item for item in (*DECODERS, *SERIES)}
_FALLBACK_COLOURS = ("#e377c2", "#bcbd22", "#393b79", "#637939")  # decoders not in the table

NAMES: tuple[str, ...] = tuple(d.name for d in sorted(DECODERS, key=lambda d: d.order))
# what a sweep computes, in reading order
SWEPT: tuple[str, ...] = tuple(d.name for d in sorted(DECODERS, key=lambda d: d.order) if d.column is not None)
# the order a sweep stores its columns in (CSV rows, `SweepResult.decoders`); figures and tables
# re-order by `ordered`
SWEEP_COLUMNS: tuple[str, ...] = tuple(d.name for d in sorted((d for d in DECODERS if d.column is not None),
                                                              key=lambda d: d.column))
# the decoders whose entropy can decide the early exit, the method's own first
CONFIDENCES: tuple[str, ...] = tuple(d.name for d in sorted((d for d in DECODERS if d.confidence is not None),
                                                            key=lambda d: d.confidence))
# the sweep's columns when no map is saved for the model (as in the synthetic sweeps)
WITHOUT_SAVED_LENS: tuple[str, ...] = tuple(name for name in SWEEP_COLUMNS if not _BY_NAME[name].needs_saved_lens)
DECODER_LABELS: dict[str, str] = {d.name: d.label for d in DECODERS}
# version 2 of the paper (March 2026) renames SPADE to SimLens and the hybrid exit to SimExit; the
# project keeps its names and takes the new ones wherever a decoder is named (the CLI's choices)
ALIASES: dict[str, str] = {"simlens": "spade", "linear_simlens": "linear_spade", "simlens_no_bos": "spade_no_bos"}


def canonical(name: str) -> str:
    """The project's name of a decoder named either way (`simlens` -> `spade`; case and '-' ignored
    for the aliases); other names as given."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    return ALIASES.get(key, name)


def decoder(name: str) -> Decoder | None:
    """The table row of a decoder; None for a series or an unknown name."""
    item = _BY_NAME.get(name)
    return item if isinstance(item, Decoder) else None


def label(name: str) -> str:
    """The reader's name of a decoder or series; an unknown name with its underscores as spaces."""
    item = _BY_NAME.get(name)
    return item.label if item else name.replace("_", " ")


def colour(name: str) -> str:
    """The colour of a decoder or series; an unknown name gets a stable colour no known one uses."""
    item = _BY_NAME.get(name)
    if item:
        return item.colour
    return _FALLBACK_COLOURS[sum(map(ord, name)) % len(_FALLBACK_COLOURS)]


def dash(name: str) -> str:
    """The line style of a decoder's per-layer curves (an ablation is dashed)."""
    known = decoder(name)
    return known.dash if known else "solid"


def ordered(names: Iterable[str]) -> list[str]:
    """Known decoders in reading order, then any others as given."""
    names = list(names)
    return [name for name in NAMES if name in names] + [name for name in names if name not in NAMES]
