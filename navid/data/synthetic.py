"""The embedded default dataset: procedural class-conditional videos in the UCF-101 layout.

Each class is one (shape, texture, motion) triple with its own object hue and its own scene
tint, so classes differ in appearance and movement as UCF-101's do (where a class's scenes
share a look: pools, courts, gyms); inside a class, shade, saturation, size, start position,
speed, direction and background vary widely. The hues matter for evaluation: with random
object colours, I3D told the real classes apart too poorly for per-class FVD to show whether a
generator follows its label (docs/data.md).

Object hues step round the colour circle (class i at i/10), so classes i and i+1 differ by
only 36 degrees; the scene hues (``SCENE_HUE_STEPS``) are a permutation chosen so that any two
classes differ by at least 4 steps (144 degrees) of object and scene hue together, and each
scene is at least 108 degrees from its own object. With scenes at the object's complement
instead, every class that a short tokenizer run's reconstructions confused was confused
with an object-hue neighbour (docs/data.md).

Clips are rendered soft (a spatial Gaussian of 1/16 of the frame width). A CPU-tiny
tokenizer cannot redraw sharp edges in a few hundred steps; its reconstructions then carry
blocky token-sized artifacts that I3D reads as a class of their own, so the reconstructions
of many classes land nearest the same real class. The softness sets how much detail a short
tokenizer run must redraw, and with it whether the demo's per-class verdict can be met at all
(docs/data.md and docs/demo.md have the measurements).

As in UCF-101, the clips of one group share a background (UCF-101's groups share actor and
scene), and groups 1..g form the test split of fold 1 (g = 7 of UCF-101's 25 groups, scaled
to the number of groups used here).

Rendering is vectorised: a whole clip is one numpy expression over a ``(T, H, W)`` grid
of object-local coordinates, with anti-aliased signed-distance shapes and only smooth or
moderate-frequency textures (a small tokenizer must be able to reconstruct them).
"""

from __future__ import annotations

import colorsys
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from tqdm import tqdm

from navid.data.video_io import write_video
from navid.utils.atomic import write_text_atomic

UCF101_GROUPS, UCF101_TEST_GROUPS = 25, 7


# ---------------------------------------------------------------- shapes: signed distance in local units
def _sdf_disk(u, v):
    return np.hypot(u, v) - 1.0


def _sdf_square(u, v):
    return np.maximum(np.abs(u), np.abs(v)) - 0.85


def _sdf_diamond(u, v):
    return (np.abs(u) + np.abs(v)) / np.sqrt(2.0) - 0.75


def _sdf_triangle(u, v):  # equilateral, pointing up (v grows downwards in image space)
    return np.maximum(v - 0.5, np.abs(u) * 0.866 - v * 0.5 - 0.5)


def _sdf_ring(u, v):
    return np.abs(np.hypot(u, v) - 0.7) - 0.3


def _sdf_cross(u, v):
    au, av = np.abs(u), np.abs(v)
    return np.minimum(np.maximum(au - 0.35, av - 1.0), np.maximum(au - 1.0, av - 0.35))


def _sdf_star(u, v):
    r, theta = np.hypot(u, v), np.arctan2(v, u)
    return r - (0.75 + 0.3 * np.cos(5 * theta))


def _sdf_ellipse(u, v):
    return np.hypot(u, v * 2.0) - 1.0


# ---------------------------------------------------------------- textures in [0, 1], local units
def _tex_solid(u, v):
    return np.zeros_like(u)


def _tex_stripes(u, v):
    return 0.5 + 0.5 * np.sin(np.pi * 2.0 * u)


def _tex_checker(u, v):
    return 0.5 + 0.5 * np.tanh(3.0 * np.sin(np.pi * 1.6 * u) * np.sin(np.pi * 1.6 * v))


def _tex_radial(u, v):
    return np.clip(np.hypot(u, v), 0.0, 1.0)


# ---------------------------------------------------------------- motions: (t in [0,1], rng) -> cx, cy, angle, scale
def _fold(x):
    """Reflect positions into [-0.6, 0.6] so objects bounce off the frame edges."""
    return 0.6 - np.abs(np.mod(x + 0.6, 2.4) - 1.2)


def _direction(rng, speed):
    a = rng.uniform(0, 2 * np.pi)
    return speed * np.cos(a), speed * np.sin(a)


def _mot_slide(t, rng):
    vx, vy = _direction(rng, rng.uniform(0.8, 1.6))
    x0, y0 = rng.uniform(-0.5, 0.5, 2)
    return _fold(x0 + vx * t), _fold(y0 + vy * t), np.full_like(t, rng.uniform(0, np.pi)), np.ones_like(t)


def _mot_spin(t, rng):
    x0, y0 = rng.uniform(-0.3, 0.3, 2)
    omega = rng.choice([-1, 1]) * rng.uniform(1.5, 3.0) * np.pi
    return np.full_like(t, x0), np.full_like(t, y0), rng.uniform(0, np.pi) + omega * t, np.ones_like(t)


def _mot_bounce(t, rng):
    x0 = rng.uniform(-0.5, 0.5)
    vx = rng.uniform(-0.4, 0.4)
    hops = rng.uniform(1.5, 2.5)
    y = 0.55 - rng.uniform(0.6, 1.0) * np.abs(np.sin(np.pi * hops * t + rng.uniform(0, np.pi)))
    return _fold(x0 + vx * t), y, np.zeros_like(t), np.ones_like(t)


def _mot_pulse(t, rng):
    x0, y0 = rng.uniform(-0.35, 0.35, 2)
    scale = 1.0 + 0.45 * np.sin(2 * np.pi * rng.uniform(1.0, 2.0) * t + rng.uniform(0, 2 * np.pi))
    return np.full_like(t, x0), np.full_like(t, y0), np.zeros_like(t), scale


def _mot_orbit(t, rng):
    radius = rng.uniform(0.3, 0.5)
    phase = rng.uniform(0, 2 * np.pi) + rng.choice([-1, 1]) * rng.uniform(1.0, 2.0) * np.pi * t
    return radius * np.cos(phase), radius * np.sin(phase), np.zeros_like(t), np.ones_like(t)


def _mot_zigzag(t, rng):
    sign = rng.choice([-1, 1])
    x = sign * (rng.uniform(-0.6, -0.3) + rng.uniform(0.8, 1.2) * t)
    y = rng.uniform(-0.2, 0.2) + 0.35 * (2 * np.abs(np.mod(rng.uniform(2, 3) * t, 1.0) - 0.5) * 2 - 1)
    return x, y, np.zeros_like(t), np.ones_like(t)


def _mot_grow(t, rng):
    x0, y0 = rng.uniform(-0.25, 0.25, 2)
    s0, s1 = rng.uniform(0.4, 0.6), rng.uniform(1.3, 1.7)
    scale = s0 + (s1 - s0) * t if rng.random() < 0.5 else s1 + (s0 - s1) * t
    return np.full_like(t, x0), np.full_like(t, y0), np.full_like(t, rng.uniform(0, np.pi / 2)), scale


def _mot_wobble(t, rng):
    freq, amp = rng.uniform(1.0, 2.0), rng.uniform(0.3, 0.5)
    phase = 2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi)
    y0 = rng.uniform(-0.4, 0.4)
    return amp * np.sin(phase), np.full_like(t, y0), 0.5 * np.cos(phase), np.ones_like(t)


def _mot_fall(t, rng):
    x0 = rng.uniform(-0.5, 0.5)
    y = rng.uniform(-0.9, -0.6) + rng.uniform(1.2, 1.6) * t**2
    return np.full_like(t, x0), y, np.zeros_like(t), np.ones_like(t)


def _mot_spin_slide(t, rng):
    cx, cy, _, scale = _mot_slide(t, rng)
    omega = rng.choice([-1, 1]) * rng.uniform(1.5, 3.0) * np.pi
    return cx, cy, omega * t, scale


@dataclass(frozen=True)
class SynthClass:
    name: str
    sdf: Callable
    texture: Callable
    motion: Callable


CLASSES = (
    SynthClass("DiskSlide", _sdf_disk, _tex_solid, _mot_slide),
    SynthClass("SquareSpin", _sdf_square, _tex_stripes, _mot_spin),
    SynthClass("TriangleBounce", _sdf_triangle, _tex_solid, _mot_bounce),
    SynthClass("RingPulse", _sdf_ring, _tex_radial, _mot_pulse),
    SynthClass("CrossOrbit", _sdf_cross, _tex_solid, _mot_orbit),
    SynthClass("StarZigzag", _sdf_star, _tex_radial, _mot_zigzag),
    SynthClass("CheckerGrow", _sdf_square, _tex_checker, _mot_grow),
    SynthClass("EllipseWobble", _sdf_ellipse, _tex_stripes, _mot_wobble),
    SynthClass("DiamondFall", _sdf_diamond, _tex_checker, _mot_fall),
    SynthClass("StripedDiskSpinSlide", _sdf_disk, _tex_stripes, _mot_spin_slide),
)


SCENE_TINT = 0.25  # share of a background's brightness that takes the class's scene colour
# Scene hue of class i, in tenths of the circle: the permutation of 0..9 that maximises the
# smallest object-plus-scene hue distance over class pairs (4 steps; neighbours' scenes >= 3
# steps apart), with every scene >= 3 steps from its object (found by exhaustive search).
SCENE_HUE_STEPS = (3, 8, 5, 0, 7, 2, 9, 4, 1, 6)


def class_hues(label: int) -> tuple[float, float]:
    """(object hue, scene hue) of class ``label``, in [0, 1)."""
    return label / len(CLASSES), SCENE_HUE_STEPS[label] / len(SCENE_HUE_STEPS)


def _background(rng: np.random.Generator, size: int, scene_hue: float) -> np.ndarray:
    """A two-tone linear gradient at a random angle, tinted towards ``scene_hue``: ``(H, W, 3)`` in [0, 1].

    The scene hue is at least 108 degrees from the class's object hue, so the object stays visible.
    """
    c0, c1 = rng.uniform(0.1, 0.9, (2, 1)) + rng.uniform(-0.08, 0.08, (2, 3))
    a = rng.uniform(0, 2 * np.pi)
    g = np.linspace(-1, 1, size)
    ramp = (np.cos(a) * g[None, :] + np.sin(a) * g[:, None]) * 0.5 + 0.5  # (H, W)
    brightness = (c0 + (c1 - c0) * ramp[..., None]).mean(-1, keepdims=True)
    tint = np.array(colorsys.hsv_to_rgb(scene_hue % 1.0, 1.0, 1.0))
    colour = (1 - SCENE_TINT) + SCENE_TINT * 0.9 * tint / tint.mean()  # channel mean 0.975: a cast, not a dimming
    return np.clip(brightness * colour, 0.0, 1.0)


@lru_cache(maxsize=None)
def _blur_matrix(size: int, sigma: float) -> np.ndarray:
    """``(S, S)`` matrix of a 1-D Gaussian blur (edge-replicating, radius 4 sigma): clamped taps folded in."""
    taps = np.arange(-int(4 * sigma + 0.5), int(4 * sigma + 0.5) + 1)
    kernel = np.exp(-0.5 * (taps / sigma) ** 2)
    rows = np.repeat(np.arange(size), len(taps))
    cols = np.clip(np.arange(size)[:, None] + taps[None, :], 0, size - 1).ravel()
    blur = np.zeros((size, size))
    np.add.at(blur, (rows, cols), np.tile(kernel / kernel.sum(), size))
    return blur


def _soften(video: np.ndarray, sigma: float) -> np.ndarray:
    """Spatial Gaussian blur of square ``(T, S, S, C)`` frames: two batched matrix products, no loop over taps.

    The blur matrix is built once per (size, sigma) and shared by every clip of a dataset.
    """
    blur = _blur_matrix(video.shape[1], sigma)
    frames = video.transpose(0, 3, 1, 2)  # (T, C, S, S): blur rows and columns as batched matmuls
    return (blur @ frames @ blur.T).transpose(0, 2, 3, 1)


def object_colours(hue: float, rng: np.random.Generator) -> np.ndarray:
    """Two colours ``(2, 3)`` of the class ``hue`` (jittered): a vivid one and a darker, duller one for textures."""
    h = (hue + rng.uniform(-0.025, 0.025)) % 1.0
    vivid = colorsys.hsv_to_rgb(h, rng.uniform(0.65, 1.0), rng.uniform(0.75, 1.0))
    dull = colorsys.hsv_to_rgb(h, rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.6))
    return np.array([vivid, dull])


def render_clip(cls: SynthClass, rng: np.random.Generator, background: np.ndarray, frames: int,
                hue: float) -> np.ndarray:
    """One clip as uint8 ``(T, H, W, 3)``; the object takes the class ``hue`` in [0, 1)."""
    size = background.shape[0]
    t = np.linspace(0.0, 1.0, frames)
    cx, cy, angle, scale = cls.motion(t, rng)  # each (T,)
    radius = rng.uniform(0.28, 0.45) * scale  # object size, fraction of half the frame
    g = np.linspace(-1, 1, size)
    dx = g[None, None, :] - cx[:, None, None]  # (T, 1, W)
    dy = g[None, :, None] - cy[:, None, None]  # (T, H, 1)
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    r = radius[:, None, None]
    u = (dx * cos + dy * sin) / r  # (T, H, W) object-local coordinates
    v = (-dx * sin + dy * cos) / r
    pixels = r * size / 2  # local unit in pixels, (T, 1, 1)
    alpha = np.clip(0.5 - cls.sdf(u, v) * pixels / 1.5, 0.0, 1.0)[..., None]  # ~1.5 px soft edge
    col0, col1 = object_colours(hue, rng)
    tex = cls.texture(u, v)[..., None]
    obj = col0 + (col1 - col0) * tex  # (T, H, W, 3)
    video = _soften(background[None] * (1 - alpha) + obj * alpha, sigma=size / 16)
    return np.round(np.clip(video, 0.0, 1.0) * 255).astype(np.uint8)


def num_test_groups(groups: int) -> int:
    """Groups 1..n are fold 1's test split: 7 of 25 in UCF-101, scaled to ``groups``."""
    return max(1, round(groups * UCF101_TEST_GROUPS / UCF101_GROUPS))


def synthesize_dataset(
    out: str | os.PathLike,
    classes: int = 10,
    videos_per_class: int = 36,
    frames: int = 32,
    size: int = 64,
    seed: int = 0,
    groups: Optional[int] = None,
    fps: float = 25,
    progress: bool = True,
) -> Path:
    """Write the dataset to ``out`` (class folders + ``ucfTrainTestlist/``) and return ``out``.

    ``groups`` defaults to ``min(25, videos_per_class)``; video ``i`` of a class belongs
    to group ``i * groups // videos_per_class + 1``. Same arguments → byte-identical files.
    """
    if not 1 <= classes <= len(CLASSES):
        raise ValueError(f"classes must be in 1..{len(CLASSES)}, got {classes}")
    if videos_per_class < 2 or frames < 1 or size < 16 or size % 2:
        raise ValueError("need videos_per_class >= 2, frames >= 1 and an even size >= 16")
    groups = min(UCF101_GROUPS, videos_per_class) if groups is None else groups
    if not 2 <= groups <= min(99, videos_per_class):
        raise ValueError(f"groups must be in 2..{min(99, videos_per_class)}, got {groups}")
    out = Path(out)
    chosen = CLASSES[:classes]
    n_test = num_test_groups(groups)
    train_lines, test_lines = [], []
    bar = tqdm(total=classes * videos_per_class, desc="synthesising", unit="video", disable=not progress)
    for label, cls in enumerate(chosen):
        object_hue, scene_hue = class_hues(label)
        group_bgs = [_background(np.random.default_rng([seed, label, g]), size, scene_hue)
                     for g in range(1, groups + 1)]
        clip_in_group: dict[int, int] = {}
        for i in range(videos_per_class):
            g = i * groups // videos_per_class + 1
            c = clip_in_group[g] = clip_in_group.get(g, 0) + 1
            rel = f"{cls.name}/v_{cls.name}_g{g:02d}_c{c:02d}.avi"
            rng = np.random.default_rng([seed, label, g, c, 1])
            write_video(out / rel, render_clip(cls, rng, group_bgs[g - 1], frames, hue=object_hue), fps=fps)
            (test_lines if g <= n_test else train_lines).append((rel, label))
            bar.update()
    bar.close()
    split_dir = out / "ucfTrainTestlist"
    class_ind = "".join(f"{i + 1} {cls.name}\r\n" for i, cls in enumerate(chosen))
    # UCF-101's split files use CRLF line ends; the train list carries 1-based labels.
    write_text_atomic(split_dir / "classInd.txt", class_ind)
    write_text_atomic(split_dir / "trainlist01.txt", "".join(f"{rel} {lab + 1}\r\n" for rel, lab in train_lines))
    write_text_atomic(split_dir / "testlist01.txt", "".join(f"{rel}\r\n" for rel, _ in test_lines))
    return out
