"""Draw the decoding order of NAR, PAR-4x and raster AR on a token grid, from the schedules alone.

Use it to see (or to show someone) why NAR needs T+H+W-2 forward steps where PAR-4x needs N/4+3
and raster N, or to check a new schedule builder by eye: every picture comes from
:func:`navid.generation.schedule.build_schedule`, nothing is drawn by hand. A token's step is
``schedule.target_block``: the forward step whose outputs predict it.

- ``--png``: one still, each token coloured by its step (dark = early, yellow = late); one row per
  schedule, one panel per latent frame t of the grid.
- ``--gif`` / ``--mp4``: tokens lighting up step by step, the schedules side by side with their
  step counters; frame k shows every schedule after forward step k+1, so the animation has
  max(num_steps) frames and the panel of a schedule with S steps changes in exactly its first S
  frames (the tokens of the current step carry a red ring).

Example (the README's picture)::

    python tools/visualize_schedule.py --grid 4 16 16 --png docs/decoding_order.png --gif order.gif

Memory: the animation is held in memory before writing, about (frames x width x height x 3)
bytes (about 1 GB for raster's 1,024 frames at 4x16x16 with the default cells; ``--cell`` shrinks it).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from navid.cli import positive_float
from navid.config import USER_ERRORS
from navid.data.video_io import write_video
from navid.generation.schedule import Schedule, build_schedule
from navid.utils.atomic import atomic_path, check_output_file

DEFAULT_KINDS = ("nar", "par4", "raster")
TITLES = {"nar": "NAR", "raster": "raster AR"}

BACKGROUND = (255, 255, 255)
UNLIT = (222, 222, 222)  # not on the colour map, so a test can tell lit from unlit cells
CURRENT = (230, 40, 50)  # ring around the tokens decoded in the frame's step
TEXT = (20, 20, 20)
# Viridis sampled at 0, 1/8, ..., 1 (dark purple -> yellow); linear interpolation in between.
VIRIDIS = np.array([
    (68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
    (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37),
], dtype=np.float64)  # fmt: skip


def title(kind: str) -> str:
    return TITLES.get(kind, f"PAR-{kind[3:]}x" if kind.startswith("par") else kind)


def token_steps(schedule: Schedule) -> np.ndarray:
    """(T, H, W) int64: the forward step (0-based) whose outputs predict each token."""
    return schedule.target_block.numpy().reshape(schedule.grid)


def step_colours(steps: np.ndarray, num_steps: int) -> np.ndarray:
    """uint8 colours (..., 3) of ``steps`` on the viridis map spread over ``num_steps`` steps."""
    x = steps / max(num_steps - 1, 1) * (len(VIRIDIS) - 1)  # (...,) position on the anchor scale
    lo = np.clip(np.floor(x).astype(np.int64), 0, len(VIRIDIS) - 2)
    frac = (x - lo)[..., None]
    return np.round(VIRIDIS[lo] * (1 - frac) + VIRIDIS[lo + 1] * frac).astype(np.uint8)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


@dataclass(frozen=True)
class Layout:
    """Pixel geometry: a header (title, frame labels), then one row per schedule with a caption
    above one H x W panel per latent frame."""

    grid: tuple
    num_rows: int
    cell: int  # cell pitch in pixels (the coloured square is cell - 1, one pixel of gap)
    margin: int = 12
    header: int = 40
    caption: int = 22
    panel_gap: int = 10
    ring: int = 2

    @property
    def panel_size(self) -> tuple:
        _, H, W = self.grid
        return H * self.cell, W * self.cell

    def panel_left(self, t: int) -> int:
        return self.margin + t * (self.panel_size[1] + self.panel_gap)

    @property
    def row_height(self) -> int:
        return self.caption + self.panel_size[0] + self.margin

    @property
    def size(self) -> tuple:
        """(height, width) of the picture, both even (MP4 needs even sizes)."""
        T = self.grid[0]
        height = self.margin + self.header + self.num_rows * self.row_height
        width = 2 * self.margin + T * self.panel_size[1] + (T - 1) * self.panel_gap
        width = max(width, 580)  # room for the headline
        return height + height % 2, width + width % 2

    def row_top(self, row: int) -> int:
        return self.margin + self.header + row * self.row_height

    def cell_origins(self, row: int) -> np.ndarray:
        """(N, 2) top-left (y, x) pixel of every token's cell in flat (t, h, w) order."""
        T, H, W = self.grid
        t, h, w = np.unravel_index(np.arange(T * H * W), (T, H, W))
        y = self.row_top(row) + self.caption + h * self.cell
        x = self.panel_left(t) + w * self.cell
        return np.stack([y, x], axis=1)

    def cell_centres(self, row: int) -> np.ndarray:
        """(N, 2) (y, x) pixel at the centre of every token's cell."""
        return self.cell_origins(row) + (self.cell - 1) // 2


def default_cell(grid: Sequence[int]) -> int:
    """Cell pitch that keeps a panel near 128 pixels (between 6 and 16 pixels per token)."""
    return int(np.clip(128 // max(grid[1], grid[2]), 6, 16))


class Painter:
    """Paints cell colours onto a pre-rendered background by fancy indexing (no loop over tokens).

    Per row it keeps the flat pixel indices of every cell's interior and ring and the token each
    pixel belongs to.
    """

    def __init__(self, layout: Layout) -> None:
        width = layout.size[1]
        c, r = layout.cell - 1, layout.ring
        dy, dx = np.mgrid[0:c, 0:c]  # (c, c) offsets inside one cell
        on_ring = (np.minimum(dy, dx) < r) | (np.maximum(dy, dx) >= c - r)  # (c, c)
        self.parts = []  # per row: ((interior pixels, tokens), (ring pixels, tokens))
        for row in range(layout.num_rows):
            origins = layout.cell_origins(row)  # (N, 2)
            pixels = (origins[:, 0, None, None] + dy) * width + origins[:, 1, None, None] + dx  # (N, c, c)
            tokens = np.broadcast_to(np.arange(len(origins))[:, None, None], pixels.shape)  # (N, c, c)
            self.parts.append(((pixels[:, ~on_ring], tokens[:, ~on_ring]), (pixels[:, on_ring], tokens[:, on_ring])))

    def paint(self, picture: np.ndarray, row: int, fill: np.ndarray, ring: np.ndarray) -> None:
        """Colour row ``row``'s cells of ``picture`` (height, width, 3): ``fill`` (N, 3) inside, ``ring`` (N, 3)
        on the border."""
        flat = picture.reshape(-1, 3)  # a view: writes land in ``picture``
        for (pixels, tokens), colours in zip(self.parts[row], (fill, ring)):
            flat[pixels] = colours[tokens]


def _background(layout: Layout, headline: str, captions: Sequence[str]) -> Image.Image:
    """White picture with the headline, a label over every frame's panel and each row's caption."""
    image = Image.new("RGB", layout.size[::-1], BACKGROUND)
    draw = ImageDraw.Draw(image)
    font, small = _font(14), _font(12)
    draw.text((layout.margin, layout.margin), headline, fill=TEXT, font=font)
    for t in range(layout.grid[0]):
        label = f"frame t={t}"
        left = layout.panel_left(t) + (layout.panel_size[1] - draw.textlength(label, font=small)) / 2
        draw.text((left, layout.margin + layout.header - 18), label, fill=TEXT, font=small)
    for row, caption in enumerate(captions):
        draw.text((layout.margin, layout.row_top(row) + 2), caption, fill=TEXT, font=font)
    return image


def _headline(grid: Sequence[int], what: str) -> str:
    T, H, W = grid
    return f"decoding order on a {T}x{H}x{W} token grid: {what}"


def render_still(schedules: Sequence[Schedule], cell: int | None = None) -> np.ndarray:
    """uint8 (height, width, 3): every token coloured by the step that decodes it."""
    layout = Layout(schedules[0].grid, len(schedules), cell or default_cell(schedules[0].grid))
    captions = [f"{title(s.kind)}: {s.num_steps} forward steps" for s in schedules]
    headline = _headline(layout.grid, "colour = forward step (dark first, yellow last)")
    picture = np.asarray(_background(layout, headline, captions)).copy()
    painter = Painter(layout)
    for row, s in enumerate(schedules):
        colours = step_colours(token_steps(s).reshape(-1), s.num_steps)  # (N, 3)
        painter.paint(picture, row, colours, colours)
    return picture


def render_animation(schedules: Sequence[Schedule], cell: int | None = None) -> np.ndarray:
    """uint8 (F, height, width, 3) with F = max num_steps: frame k shows every schedule after step k+1.

    A schedule with S steps has finished from frame S-1 on; its panel, rings and counter stay as they are.
    """
    grid = schedules[0].grid
    layout = Layout(grid, len(schedules), cell or default_cell(grid))
    painter = Painter(layout)
    num_frames = max(s.num_steps for s in schedules)
    steps = [token_steps(s).reshape(-1) for s in schedules]  # each (N,)
    colours = [step_colours(st, s.num_steps) for st, s in zip(steps, schedules)]  # each (N, 3)
    unlit = np.broadcast_to(np.array(UNLIT, dtype=np.uint8), colours[0].shape)  # (N, 3)
    current = np.array(CURRENT, dtype=np.uint8)
    frames = np.empty((num_frames, *layout.size, 3), dtype=np.uint8)
    headline = _headline(grid, "tokens light up in their step (red ring = this step)")
    for k in range(num_frames):
        done = [min(k, s.num_steps - 1) for s in schedules]
        captions = [f"{title(s.kind)}: step {d + 1} / {s.num_steps}" for s, d in zip(schedules, done)]
        frames[k] = np.asarray(_background(layout, headline, captions))
        for row, d in enumerate(done):
            lit = (steps[row] <= d)[:, None]  # (N, 1)
            fill = np.where(lit, colours[row], unlit)  # (N, 3)
            ring = np.where((steps[row] == d)[:, None], current, fill)  # (N, 3)
            painter.paint(frames[k], row, fill, ring)
    return frames


def write_png(path: str | Path, picture: np.ndarray) -> Path:
    with atomic_path(path) as tmp:
        Image.fromarray(picture).save(tmp, format="PNG", optimize=True)
    return Path(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="See the module docstring for details."
    )
    parser.add_argument(
        "--grid", type=int, nargs=3, default=(4, 16, 16), metavar=("T", "H", "W"), help="token grid (default 4 16 16)"
    )
    parser.add_argument(
        "--kinds", nargs="+", default=list(DEFAULT_KINDS), help="schedules, one row each (nar, par<n>, raster)"
    )
    parser.add_argument("--png", help="write the still (each token coloured by its step) here")
    parser.add_argument("--gif", help="write the step-by-step animation here as a GIF")
    parser.add_argument("--mp4", help="write the step-by-step animation here as an MP4")
    parser.add_argument("--fps", type=positive_float, default=12.0,
                        help="animation frame rate (one frame per forward step)")
    parser.add_argument(
        "--cell", type=int, default=None, help="pixels per token (default: a panel of about 128 pixels)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not (args.png or args.gif or args.mp4):
        print("visualize_schedule: error: give at least one of --png, --gif, --mp4", file=sys.stderr)
        return 2
    if args.cell is not None and args.cell < 4:
        print(f"visualize_schedule: error: --cell must be at least 4 pixels, got {args.cell}", file=sys.stderr)
        return 2
    try:
        schedules = [build_schedule(kind, tuple(args.grid)) for kind in args.kinds]
        for option in ("png", "gif", "mp4"):
            if getattr(args, option):
                check_output_file(Path(getattr(args, option)), f"--{option}")
    except USER_ERRORS as err:
        print(f"visualize_schedule: error: {err}", file=sys.stderr)
        return 2
    if args.png:
        print(f"wrote {write_png(args.png, render_still(schedules, args.cell))}")
    if args.gif or args.mp4:
        frames = render_animation(schedules, args.cell)
        for path in filter(None, (args.gif, args.mp4)):
            print(f"wrote {write_video(path, frames, fps=args.fps)} ({len(frames)} frames)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
