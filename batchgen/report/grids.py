"""A contact sheet drawn as a PNG grid (``OUT/grids/``): thumbnails in their cells, the
row and column headers, the parameters signed into the file so an unchanged sheet is not
drawn again."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, PngImagePlugin

from batchgen.output.layout import GRIDS_DIR
from batchgen.output.temporary import replace_whole
from batchgen.report.glyphs import Font, font
from batchgen.report.sheets import Sheet, column_spans

__all__ = ["save_grid"]

_BACKGROUND = (255, 255, 255)
_INK = (20, 20, 20)
_FAILED = (253, 226, 226)
_FAILED_INK = (185, 28, 28)
_PENDING = (238, 238, 238)
_MUTED = (100, 106, 115)
_RULE = (210, 214, 220)
_SIGNATURE_KEY = "batchgen-sheet"
_DRAWING = 2  # how grids are drawn: a new batchgen that draws them otherwise redraws every one


def _text(
    draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, font: Font, width: int, **kw: Any
) -> None:
    """Draw ``text`` in characters ``font`` has, cut with ``...`` to fit ``width`` pixels."""
    text = font.drawable(text)
    if draw.textlength(text, font=font.face) > width:
        while text and draw.textlength(text + "...", font=font.face) > width:
            text = text[:-1]
        text = text + "..." if text else ""
    draw.text(xy, text, font=font.face, **kw)


def _wrapped(text: str, draw: ImageDraw.ImageDraw, font: Font, width: int, lines: int) -> list[str]:
    """``text`` in at most ``lines`` lines of ``width`` pixels, broken between words (the
    last line cut by :func:`_text` if it is still too long)."""
    words = font.drawable(text).split(" ")
    out: list[str] = []
    while words and len(out) < lines - 1:
        taken = 1
        while taken < len(words) and draw.textlength(" ".join(words[: taken + 1]), font=font.face) <= width:
            taken += 1
        out.append(" ".join(words[:taken]))
        words = words[taken:]
    if words:
        out.append(" ".join(words))
    return out


def _centred(draw: ImageDraw.ImageDraw, x: int, y: int, width: int, text: str, font: Font, **kw: Any) -> None:
    shown = font.drawable(text)
    shift = max(0, (width - int(draw.textlength(shown, font=font.face))) // 2)
    _text(draw, (x + shift, y), text, font, width, **kw)


def _signature(sheet: Sheet, cell: int, font_name: str) -> str:
    """What a grid PNG shows, hashed: an unchanged sheet is not drawn again."""
    parts = [
        str(_DRAWING),
        sheet.title,
        str(cell),
        font_name,
        repr(sheet.row_headers),
        repr(sheet.column_headers),
    ]
    parts += [f"{r},{c}:{j.thumb}:{j.state}:{j.code}" for (r, c), j in sorted(sheet.cells.items())]
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


def save_grid(sheet: Sheet, out_dir: Path, name: str, *, cell: int = 192) -> str:
    """Draw ``sheet`` as a labelled PNG ``OUT/grids/<name>.png``; its path relative to OUT.

    The PNG carries a signature of what it shows; when the file there already has the
    same one it is left as it is (reports at the end of each run redraw only what changed).
    """
    path = out_dir / GRIDS_DIR / f"{name}.png"
    cell = max(64, min(cell, 8192 // max(1, len(sheet.column_headers) + 1)))
    small = font(max(11, cell // 12))
    title_font = font(max(14, cell // 9))
    signature = _signature(sheet, cell, small.name)
    try:
        with Image.open(path) as existing:
            if existing.info.get(_SIGNATURE_KEY) == signature:
                return f"{GRIDS_DIR}/{name}.png"
    except (OSError, ValueError):
        pass
    pad = cell // 16
    line = int(small.face.getbbox("Ag")[3]) + pad  # one line of header text
    levels = len(sheet.columns)
    header_w = cell + cell // 2 if sheet.rows else pad
    title_h = cell // 5 + pad
    # A line per column level, and one more naming the rows.
    header_h = line * (levels + (1 if sheet.rows else 0)) + pad
    width = header_w + cell * len(sheet.column_headers) + pad
    height = title_h + header_h + cell * len(sheet.row_headers) + pad
    image = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    _text(draw, (pad, pad), sheet.title, title_font, width - 2 * pad, fill=_INK)
    top = title_h + header_h
    for level, level_name in enumerate(sheet.columns):
        y = title_h + level * line
        if sheet.rows:  # the level's name in the corner, the values to its right
            _text(draw, (pad, y), f"{level_name} →", small, header_w - 2 * pad, fill=_MUTED)
        x = header_w
        for text, span in column_spans(sheet, level):
            _centred(draw, x, y, cell * span, text, small, fill=_INK)
            if level < levels - 1:
                draw.line((x + pad, y + line - 2, x + cell * span - pad, y + line - 2), fill=_RULE)
            x += cell * span
    if sheet.rows:
        _text(
            draw,
            (pad, top - line - pad // 2),
            f"{' · '.join(sheet.rows)} ↓",
            small,
            header_w - 2 * pad,
            fill=_MUTED,
        )
    for r, header in enumerate(sheet.row_headers):
        y = top + r * cell
        if sheet.rows:
            texts = _wrapped(header.text, draw, small, header_w - 2 * pad, 2)
            below = y + (cell - line * (len(texts) + len(header.notes))) // 2
            for n, text in enumerate(texts):
                _text(draw, (pad, below + n * line), text, small, header_w - 2 * pad, fill=_INK)
            for n, note in enumerate(header.notes, start=len(texts)):
                _text(draw, (pad, below + n * line), note, small, header_w - 2 * pad, fill=_MUTED)
        for c in range(len(sheet.column_headers)):
            x = header_w + c * cell
            box = (x + 2, y + 2, x + cell - 2, y + cell - 2)
            job = sheet.cells.get((r, c))
            if job is not None and job.thumb:
                try:
                    with Image.open(out_dir / job.thumb) as thumb:
                        tile = thumb.convert("RGB")
                        tile.thumbnail((cell - 4, cell - 4))
                        image.paste(tile, (x + (cell - tile.width) // 2, y + (cell - tile.height) // 2))
                    continue
                except OSError:
                    pass
            if job is not None and job.state == "failed":
                draw.rectangle(box, fill=_FAILED, outline=_FAILED_INK, width=2)
                draw.line((box[0], box[1], box[2], box[3]), fill=_FAILED_INK, width=2)
                draw.line((box[0], box[3], box[2], box[1]), fill=_FAILED_INK, width=2)
                label = f"failed {job.code}" if job.code is not None else "failed"
                _text(draw, (x + pad, y + pad), label, small, cell - 2 * pad, fill=_FAILED_INK)
            else:
                draw.rectangle(box, fill=_PENDING)
                label = "no job" if job is None else job.state
                _text(draw, (x + pad, y + pad), label, small, cell - 2 * pad, fill=(110, 110, 110))
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    info.add_text(_SIGNATURE_KEY, signature)
    # optimize=True would take about twice as long
    replace_whole(path, lambda part: image.save(part, format="PNG", pnginfo=info))
    return f"{GRIDS_DIR}/{name}.png"
