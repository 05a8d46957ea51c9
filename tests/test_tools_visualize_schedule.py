"""tools/visualize_schedule.py: every token lights up once, in the step its schedule says."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from navid.data.video_io import read_video
from navid.generation.schedule import build_schedule
from tools import visualize_schedule as vs

GRID = (2, 4, 6)  # small, not square, and PAR-4x can split it
KINDS = ("nar", "par4", "raster")


def _independent_steps(kind: str, grid) -> np.ndarray | None:
    """The step of each token from the definitions in DESIGN.md, not from the schedule (None for PAR)."""
    T, H, W = grid
    t, h, w = np.meshgrid(np.arange(T), np.arange(H), np.arange(W), indexing="ij")
    if kind == "nar":
        return (t + h + w).reshape(-1)  # plane c is predicted by block c (block 0 = class slot)
    if kind == "raster":
        return np.arange(T * H * W)
    return None


def test_animation_lights_every_token_once_in_its_step():
    schedules = [build_schedule(kind, GRID) for kind in KINDS]
    frames = vs.render_animation(schedules)  # (F, height, width, 3)
    num_frames = max(s.num_steps for s in schedules)
    assert frames.shape[0] == num_frames
    layout = vs.Layout(GRID, len(schedules), vs.default_cell(GRID))
    assert frames.shape[1:3] == layout.size
    for row, s in enumerate(schedules):
        steps = s.target_block.numpy()  # (N,)
        independent = _independent_steps(s.kind, GRID)
        if independent is not None:
            assert np.array_equal(steps, independent)
        y, x = layout.cell_centres(row).T
        centres = frames[:, y, x]  # (F, N, 3)
        lit = (centres != np.array(vs.UNLIT)).any(-1)  # (F, N)
        # lit from exactly the frame of its step on, never before, never switched off
        assert np.array_equal(lit, np.arange(num_frames)[:, None] >= steps[None, :])
        # once lit, a token shows its step's colour
        colours = vs.step_colours(steps, s.num_steps)  # (N, 3)
        assert np.array_equal(centres[-1], colours)

        # num_steps frames per schedule: the row changes in each of its first num_steps frames, then never
        top = layout.row_top(row)
        region = frames[:, top : top + layout.row_height]
        changed = (region[1:] != region[:-1]).reshape(num_frames - 1, -1).any(1)  # frame k vs k-1, k >= 1
        assert changed.tolist() == [k < s.num_steps for k in range(1, num_frames)]
        assert len({region[k].tobytes() for k in range(num_frames)}) == s.num_steps


def test_still_colours_each_token_by_its_step():
    schedules = [build_schedule(kind, GRID) for kind in KINDS]
    still = vs.render_still(schedules, cell=9)
    layout = vs.Layout(GRID, len(schedules), 9)
    for row, s in enumerate(schedules):
        y, x = layout.cell_centres(row).T
        assert np.array_equal(still[y, x], vs.step_colours(s.target_block.numpy(), s.num_steps))
    # distinct steps get distinct colours at this grid's size (raster: 48 steps)
    raster = vs.step_colours(np.arange(48), 48)
    assert len({tuple(c) for c in raster}) == 48


def test_command_writes_png_gif_mp4(tmp_path):
    png, gif, mp4 = tmp_path / "order.png", tmp_path / "order.gif", tmp_path / "order.mp4"
    assert vs.main(["--grid", *map(str, GRID), "--png", str(png), "--gif", str(gif), "--mp4", str(mp4)]) == 0
    schedules = [build_schedule(kind, GRID) for kind in KINDS]
    assert np.array_equal(np.asarray(Image.open(png).convert("RGB")), vs.render_still(schedules))
    frames = vs.render_animation(schedules)
    for path in (gif, mp4):
        video = read_video(path)
        assert video.shape == frames.shape  # one frame per forward step of the longest schedule


def test_command_rejects_a_grid_par_cannot_split(tmp_path, capsys):
    assert vs.main(["--grid", "2", "3", "3", "--png", str(tmp_path / "x.png")]) == 2
    assert "divisible by 2" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("kinds", [("nar",), ("raster", "nar")])
def test_any_subset_of_schedules(kinds):
    schedules = [build_schedule(kind, (1, 3, 5)) for kind in kinds]
    frames = vs.render_animation(schedules)
    assert frames.shape[0] == max(s.num_steps for s in schedules)
