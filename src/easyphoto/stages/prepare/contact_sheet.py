"""The contact sheet: one PNG of every photo, kept crops first, rejected ones with their reasons."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...imageio import fit_within, load_image, save_png

if TYPE_CHECKING:  # pragma: no cover
    from . import PhotoResult, PreparedSet

#: Side of a contact-sheet tile, px.
THUMB = 160


def thumbnail(image: np.ndarray, size: int = THUMB) -> np.ndarray:
    """A copy of ``image`` whose long side is at most ``size`` px."""
    small, _ = fit_within(image, size)
    return np.ascontiguousarray(small)


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType support for the default font
        return ImageFont.load_default()


def _wrap(text: str, font: Any, width: int, draw: Any, max_lines: int = 4) -> list[str]:
    words: list[str] = []
    for word in text.split():  # break words longer than a line (paths) into pieces
        while draw.textlength(word, font=font) > width and len(word) > 1:
            cut = len(word) - 1
            while cut > 1 and draw.textlength(word[:cut], font=font) > width:
                cut -= 1
            words.append(word[:cut])
            word = word[cut:]
        words.append(word)
    lines, line = [], ""
    for word in words:
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + [lines[max_lines - 1] + " …"]
    return lines


def contact_sheet(prepared: PreparedSet, *, thumb: int = THUMB, columns: int = 6) -> np.ndarray:
    """One RGB image: the kept training crops (rank, score, file) and every rejected photo with its
    face box (red) and the reason, so a person sees at a glance what will be trained on."""
    from PIL import Image, ImageDraw

    pad, text_h = 8, 64
    cell_w, cell_h = thumb + pad, thumb + text_h
    kept, rejected = prepared.kept, prepared.rejected
    title_h = 30

    def rows(n: int) -> int:
        return max(1, math.ceil(n / columns))

    width = pad + columns * cell_w
    height = pad + title_h + rows(len(kept)) * cell_h + title_h + rows(len(rejected)) * cell_h + pad
    sheet = Image.new("RGB", (width, height), (245, 245, 245))
    draw = ImageDraw.Draw(sheet)
    title, small = _font(18), _font(12)

    def tile(result: PhotoResult) -> Image.Image:
        thumb_img = result.thumbnail
        if thumb_img is None and result.file and (prepared.out_dir / result.file).is_file():
            thumb_img = thumbnail(load_image(prepared.out_dir / result.file))
        if thumb_img is None:
            im = Image.new("RGB", (thumb, thumb), (200, 200, 200))
            ImageDraw.Draw(im).text((thumb // 2 - 6, thumb // 2 - 12), "?", fill=(90, 90, 90), font=title)
            return im
        im = Image.fromarray(thumb_img)
        if not result.kept and result.face_box and result.width:
            s = im.width / result.width
            box = [v * s for v in result.face_box]
            ImageDraw.Draw(im).rectangle(box, outline=(230, 30, 30), width=2)
        return im

    y = pad
    draw.text((pad, y + 4), f"Kept: {len(kept)} (will be trained on)", fill=(20, 110, 40), font=title)
    y += title_h
    for section, items in (("kept", kept), ("rejected", rejected)):
        if section == "rejected":
            y += rows(len(kept)) * cell_h
            draw.text((pad, y + 4), f"Rejected: {len(rejected)}", fill=(170, 30, 30), font=title)
            y += title_h
        for i, result in enumerate(items):
            x0 = pad + (i % columns) * cell_w
            y0 = y + (i // columns) * cell_h
            im = tile(result)
            sheet.paste(im, (x0 + (thumb - im.width) // 2, y0 + (thumb - im.height) // 2))
            name = Path(result.source).name
            if result.kept:
                ref = " ref" if result.reference else ""
                text = f"#{result.rank} {result.score:.2f}{ref} {name}"
                color = (20, 90, 30)
            else:
                reason = result.reason or ""
                for other in prepared.photos:  # name other photos by file name, not full path
                    reason = reason.replace(other.source, Path(other.source).name)
                text = f"{name}: {reason}"
                color = (150, 20, 20)
            for k, line in enumerate(_wrap(text, small, thumb, draw)):
                draw.text((x0, y0 + thumb + 2 + 14 * k), line, fill=color, font=small)
    return np.asarray(sheet)


def write_contact_sheet(prepared: PreparedSet, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Draw :func:`contact_sheet` and save it as PNG (atomically)."""
    return save_png(contact_sheet(prepared, **kwargs), path)


__all__ = ["THUMB", "contact_sheet", "thumbnail", "write_contact_sheet"]
