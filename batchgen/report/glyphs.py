"""Text for the grid PNGs: a font, and every string cut down to characters it can draw.

Pillow's own font (Aileron) has no glyph for ``é``, ``—`` or ``→``: it draws a box
instead. So the grids use the first of :data:`FONT_FILES` found on the machine
(DejaVu Sans on Debian and Ubuntu, Liberation Sans, Arial), else Pillow's, and
:meth:`Font.drawable` replaces each character the font lacks: a letter by its
unaccented form (``é`` -> ``e``), a few signs by ASCII (``—`` -> ``-``, ``→`` ->
``->``), anything else by ``?``. Whatever is drawn, the font has a glyph for.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache

from PIL import ImageFont

__all__ = ["FONT_FILES", "Font", "font"]

# Searched by name in the system's font folders (Pillow looks in /usr/share/fonts and
# the like), first found wins.
FONT_FILES = ("DejaVuSans.ttf", "LiberationSans-Regular.ttf", "Arial.ttf", "arial.ttf")

_ASCII = {
    "\u2014": "-",  # em dash
    "\u2013": "-",  # en dash
    "\u2212": "-",  # minus
    "\u2026": "...",
    "\u2192": "->",
    "\u2190": "<-",
    "\u2193": "v",
    "\u2191": "^",
    "\u00d7": "x",
    "\u00b7": ".",
    "\u2018": "'",
    "\u2019": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u00a0": " ",
}
_UNKNOWN = "?"
_NOT_A_GLYPH = "\U0010fffd"  # a private-use code point no font has: it draws the font's "missing" box


@dataclass(slots=True)
class Font:
    """One font at one size, and which characters it can draw."""

    face: ImageFont.FreeTypeFont | ImageFont.ImageFont
    name: str
    _known: dict[str, bool] = field(default_factory=dict)
    _missing: bytes = b""

    def __post_init__(self) -> None:
        self._missing = self._mask(_NOT_A_GLYPH)

    def _mask(self, char: str) -> bytes:
        return bytes(self.face.getmask(char))

    def has(self, char: str) -> bool:
        """Whether the font draws ``char`` as itself (not as its box for a missing glyph)."""
        known = self._known.get(char)
        if known is None:
            # A space draws nothing; every other missing character draws the same box.
            known = char.isspace() or self._mask(char) != self._missing
            self._known[char] = known
        return known

    def drawable(self, text: str) -> str:
        """``text`` with each character the font cannot draw replaced (see the module docstring)."""
        if text.isprintable() and all(self.has(c) for c in text):
            return text
        out: list[str] = []
        for char in text:
            if unicodedata.category(char) in ("Cc", "Cf"):  # a newline, a tab, a zero-width mark
                out.append(" ")
                continue
            if self.has(char):
                out.append(char)
                continue
            substitute = _ASCII.get(char)
            if substitute is None:
                bare = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
                substitute = bare if bare and bare != char else _UNKNOWN
            out.append("".join(c if self.has(c) else _UNKNOWN for c in substitute))
        return "".join(out)


@cache
def font(size: int, files: Sequence[str] = FONT_FILES) -> Font:
    """The first of ``files`` that loads, at ``size`` pixels; else Pillow's own font."""
    for name in files:
        try:
            return Font(ImageFont.truetype(name, size), name)
        except OSError:
            continue
    return Font(ImageFont.load_default(size=size), "Pillow default")
