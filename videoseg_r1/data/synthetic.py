"""Procedural synthetic reasoning-VOS benchmark: videos of moving shapes, queries whose answers we know.

Real benchmarks cannot be downloaded everywhere, and tests, the demo and small training runs need data
whose ground truth is exact. This module draws videos (textured, noisy, slowly panning backgrounds)
with 2-6 coloured shapes that move (static, constant velocity, bouncing, accelerating, stopping and
starting, stopping for good, entering or leaving the frame) and occlude each other, then writes
queries in four tiers with their target object ids, a difficulty D in [1, 10], the key interval and
a target frame. Output is the exact ReVOS layout (see ``generate``) plus ``synthetic_meta.json``.

Called by ``videoseg-r1 synth`` (``synthetic_cli.py``) and by tests across the project:
``generate_video(seed, ...)`` builds one video in memory, ``generate(out_dir, ...)`` writes a dataset.

Query semantics (the definitions the labels follow; tests recompute them independently):

* positions are shape centres ``centers_xy`` in pixels (x right, y down); speed at transition t is
  ``|c[t+1] - c[t]|`` px/frame; "moves at t" means speed > 0 (static objects have exactly 0);
* an object is *in the frame* at t when its bounding box (centre +- ``extent_xy``) overlaps the pixel
  grid [0, W-1] x [0, H-1], *fully inside* when the box lies within it; *visible* at t when its
  ground-truth (occlusion-aware) mask has at least one pixel;
* tier 1 (type_id 0, referring): colour/shape/size attributes ("the red triangle", "all the blue
  shapes", "the small circle" when there are exactly two circles);
* tier 2: size superlatives over nominal areas ``area_px``; position superlatives and relations
  between centres on the first ("at the start") or last ("at the end") frame, among visible objects;
* tier 3: fastest = largest mean speed over all transitions; never moves = all speeds 0; stops =
  moved at some point and the last speed is 0; pauses = still between two movements; speeds up =
  mean speed over the last third of transitions > 1.6 x the first third; enters = not in the frame
  at frame 0 but later; enter order by first in-frame frame; leaves = in the frame at some point but
  not in the last frame; gets hidden = some frame fully inside with visible area < 0.55 x area_px.
  A colour or shape filter ("the red shape that ...") restricts the candidates;
* tier 4: chains ("the other shapes with the colour of the one that leaves the scene", "every shape
  left of the largest one at the start", "every shape bigger than the blue square").

Every label is chosen with a margin (ratios, pixel gaps, frame gaps, visibility either clear or
absent) so that a query never sits near a decision boundary; a video whose scene yields too few
unambiguous queries is resampled.

Difficulty D (documented heuristic, SPEC section 2 "when no rater is available"), each term in [0, 1]:
``D = clip(1 + 3 (tier-1)/3 + 1.5 (K-2)/4 + 1.5 occlusion + 1.0 smallness + 1.0 motion
+ 0.75 [targets > 1] + 1.25 (1 - key_len/T), 1, 10)`` with K objects, occlusion = mean over targets
of the share of in-frame frames where > 25 % of the object is hidden, smallness = 1 - min(1,
area / (4 % of the image)), motion = min(1, mean speed / (1.2 % of the image diagonal per frame)).

Splits: ``train`` and ``valid`` share a distribution; ``test_ood`` holds out colour-shape combinations
(``HELD_OUT_COMBOS``: never drawn in train/valid, at least one per test_ood video), whole templates
(``OOD_ONLY_TEMPLATES``) and phrasings (test_ood uses only each template's held-out phrasings).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np


__all__ = ["generate", "generate_video", "SyntheticVideo", "SyntheticObject", "SyntheticExpression", "QueryTemplate",
           "TEMPLATES", "OOD_ONLY_TEMPLATES", "HELD_OUT_COMBOS", "SHAPES", "COLORS_RGB", "MOTION_KINDS", "SPLITS",
           "split_counts", "video_name", "is_synthetic_output", "rle_encode_frames", "write_overlays"]

# ----------------------------------------------------------------------------- constants

FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test_ood")
SPLIT_CODES = {"train": 0, "valid": 1, "test_ood": 2}  # part of each video's seed
SPLIT_FRACTIONS = {"train": 0.7, "valid": 0.15, "test_ood": 0.15}  # share of --videos per split
DEFAULT_NUM_VIDEOS = 100
DEFAULT_NUM_FRAMES = 64
DEFAULT_SIZE_WH = (320, 240)
FPS = 10.0
JPEG_QUALITY = 95
MIN_FRAMES = 2
MIN_SIDE_PX = 32
MAX_SIDE_PX = 4096
MIN_OBJECTS, MAX_OBJECTS = 2, 6
MAX_EXPRESSIONS_PER_VIDEO = 8
MIN_EXPRESSIONS_PER_VIDEO = 2
MAX_SCENE_ATTEMPTS = 60

COLORS_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 190, 60), "blue": (40, 80, 230), "yellow": (240, 220, 40),
    "purple": (150, 60, 200), "orange": (250, 140, 20), "cyan": (40, 210, 220), "pink": (250, 110, 180),
}
SHAPES = ("circle", "square", "triangle", "star", "hexagon", "diamond")
# One held-out colour per shape: each colour and each shape is still seen in train, never together.
HELD_OUT_COMBOS = frozenset({("circle", "green"), ("square", "orange"), ("triangle", "blue"),
                             ("star", "purple"), ("hexagon", "yellow"), ("diamond", "red")})
# Equivalent radius (area = pi r^2) as a fraction of the shorter image side, per size category.
SIZE_RADIUS_FRAC = {"small": (0.05, 0.065), "medium": (0.08, 0.095), "large": (0.115, 0.135)}
MIN_RADIUS_PX = 3.0
MOTION_KINDS = ("static", "linear", "bouncing", "accelerating", "stop_start", "stops", "enters", "leaves")
MOTION_WEIGHTS = (0.11, 0.13, 0.16, 0.12, 0.12, 0.12, 0.12, 0.12)
PAN_MAX_PX_PER_FRAME = 0.4
NOISE_STD = 3.0

# Margins that keep every label far from its decision boundary.
CLEAR_FRAC = 0.3  # at a reference frame each object is either >= 30 % visible or absent
GOOD_FRAC = 0.5  # target frame / evidence frames: every target >= 50 % visible
SIZE_RATIO = 1.3  # superlative / comparison of areas
SPEED_RATIO = 1.5  # fastest vs runner-up
POS_GAP_FRAC = 0.06  # position superlatives: gap to runner-up, fraction of W (x) or H (y)
REL_GAP_FRAC = 0.04  # relations: distance from the anchor's coordinate, fraction of W or H
NEAR_RATIO = 1.4  # nearest vs runner-up distance
ACCEL_HI, ACCEL_LO = 2.0, 1.25  # speeds up: target ratio >= HI, others <= LO (definition: 1.6)
HIDDEN_HI, HIDDEN_LO = 0.4, 0.75  # gets hidden: target min visible share <= HI, others >= LO (def. 0.55)
MOVING_MIN_PX = 0.3  # "clearly moving": mean speed at least this (px/frame)


# ----------------------------------------------------------------------------- data classes


@dataclass
class SyntheticObject:
    """One shape. ``radius_px`` is the equivalent radius (area_px = pi radius_px^2); ``extent_xy``
    the half width / half height of its bounding box; ``z_order``: larger is drawn on top."""

    obj_id: int
    shape: str
    color: str
    color_rgb: tuple[int, int, int]
    size: str
    radius_px: float
    area_px: float
    extent_xy: tuple[float, float]
    motion: str
    z_order: int
    held_out_combo: bool
    events: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"shape": self.shape, "color": self.color, "color_rgb": list(self.color_rgb), "size": self.size,
                "radius_px": round(self.radius_px, 3), "area_px": round(self.area_px, 2),
                "extent_xy": [round(v, 3) for v in self.extent_xy], "motion": self.motion,
                "z_order": self.z_order, "held_out_combo": self.held_out_combo, "events": self.events}


@dataclass
class SyntheticExpression:
    """One query. ``obj_ids`` are the targets; ``key_interval`` is inclusive (start, end) frames."""

    exp_id: str
    text: str
    obj_ids: tuple[int, ...]
    type_id: int
    tier: int
    difficulty: float
    template: str
    params: dict
    phrasing_id: str
    key_interval: tuple[int, int]
    target_frame: int
    difficulty_terms: dict = field(default_factory=dict)


@dataclass
class SyntheticVideo:
    """A generated video held in memory.

    frames: (T, H, W, 3) uint8 RGB. label_maps: (T, H, W) uint8, pixel = id of the visible object
    (0 = background), so object k's mask at t is ``label_maps[t] == k``. centers_xy: (K, T, 2) float
    pixel centres (row k-1 is object k). visible_area_px / in_frame_area_px: (K, T) pixel counts of
    the visible (occlusion-aware) and of the unoccluded in-frame shape.
    """

    name: str
    split: str
    index: int
    seed: int
    fps: float
    frames: np.ndarray
    label_maps: np.ndarray
    centers_xy: np.ndarray
    visible_area_px: np.ndarray
    in_frame_area_px: np.ndarray
    objects: list[SyntheticObject]
    expressions: list[SyntheticExpression]
    scene_attempts: int = 1

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def object_ids(self) -> list[int]:
        return [o.obj_id for o in self.objects]

    def mask(self, obj_id: int) -> np.ndarray:
        """(T, H, W) bool ground-truth mask of one object."""
        return self.label_maps == obj_id

    def masks_at(self, frame_idx: int, obj_ids: Iterable[int] | None = None) -> dict[int, np.ndarray]:
        """{obj_id: (H, W) bool} at one frame (all objects by default)."""
        ids = self.object_ids if obj_ids is None else list(obj_ids)
        return {k: self.label_maps[frame_idx] == k for k in ids}

    def frame_names(self) -> list[str]:
        return [f"{t:05d}" for t in range(self.num_frames)]


# ----------------------------------------------------------------------------- shapes


def _unit_polygon(shape: str) -> np.ndarray:
    """Vertices (N, 2) of a shape centred at 0 (y down), scaled to area pi (equivalent radius 1)."""
    if shape == "circle":
        a = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        pts = np.stack([np.cos(a), np.sin(a)], 1)
    elif shape == "square":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
    elif shape == "triangle":
        a = np.deg2rad([-90, 30, 150])
        pts = np.stack([np.cos(a), np.sin(a)], 1)
    elif shape == "star":
        a = np.deg2rad(-90 + 36 * np.arange(10))
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.5)
        pts = np.stack([r * np.cos(a), r * np.sin(a)], 1)
    elif shape == "hexagon":
        a = np.deg2rad(60 * np.arange(6))
        pts = np.stack([np.cos(a), np.sin(a)], 1)
    elif shape == "diamond":
        pts = np.array([[0, -1], [0.6, 0], [0, 1], [-0.6, 0]], dtype=np.float64)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    x, y = pts[:, 0], pts[:, 1]
    area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    return pts * math.sqrt(math.pi / area)


_UNIT_POLYGONS = {s: _unit_polygon(s) for s in SHAPES}


# ----------------------------------------------------------------------------- motion


def _randint(rng: np.random.Generator, lo: int, hi: int) -> int:
    """Integer in [lo, hi] (inclusive); lo when the range is empty (very short videos)."""
    return int(lo) if hi <= lo else int(rng.integers(lo, hi + 1))


def _bounce(p0: np.ndarray, direction: np.ndarray, speeds_px: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Centres (T, 2) of a point moving with per-transition speeds, reflecting off [lo, hi]."""
    out = np.empty((len(speeds_px) + 1, 2))
    p, d = p0.astype(np.float64).copy(), direction.astype(np.float64).copy()
    out[0] = p
    for t, s in enumerate(speeds_px):
        p = p + d * s
        for ax in (0, 1):
            if p[ax] < lo[ax]:
                p[ax], d[ax] = 2 * lo[ax] - p[ax], -d[ax]
            elif p[ax] > hi[ax]:
                p[ax], d[ax] = 2 * hi[ax] - p[ax], -d[ax]
            p[ax] = min(max(p[ax], lo[ax]), hi[ax])
        out[t + 1] = p
    return out


def _simulate_motion(kind: str, rng: np.random.Generator, extent_xy: tuple[float, float], size_wh: tuple[int, int],
                     num_frames: int) -> tuple[np.ndarray, dict]:
    """Trajectory (T, 2) of centres for one motion kind, and its events (frame indices)."""
    W, H = size_wh
    T = num_frames
    n = T - 1  # transitions
    rx, ry = extent_xy
    lo = np.array([rx, ry])
    hi = np.maximum(np.array([W - 1 - rx, H - 1 - ry]), lo + 1e-3)
    unit = max(min(W, H) / 240.0, 0.25)  # speeds scale with the image
    events: dict = {}

    def inside() -> np.ndarray:
        return rng.uniform(lo, hi)

    def direction() -> np.ndarray:
        a = rng.uniform(0, 2 * np.pi)
        return np.array([math.cos(a), math.sin(a)])

    if kind == "static":
        return np.repeat(inside()[None], T, axis=0), events
    if kind == "linear":
        p0 = inside()
        p1 = inside()
        for _ in range(12):
            if np.linalg.norm(p1 - p0) >= 0.3 * min(W, H):
                break
            p1 = inside()
        frac = np.arange(T) / max(n, 1)
        return p0 + (p1 - p0) * frac[:, None], events
    if kind in ("bouncing", "accelerating", "stop_start", "stops"):
        if kind == "accelerating":
            speeds = np.linspace(rng.uniform(0.3, 0.7), rng.uniform(2.6, 4.0), max(n, 1))[:n] * unit
        else:
            speeds = np.full(n, (rng.uniform(1.0, 3.0) if kind == "bouncing" else rng.uniform(1.0, 2.5)) * unit)
        if kind == "stop_start":
            a = _randint(rng, max(1, round(0.2 * n)), max(1, round(0.45 * n)))
            length = _randint(rng, max(2, round(0.2 * n)), max(2, round(0.35 * n)))
            speeds[a:a + length] = 0.0
            events["pause_frames"] = [a, min(a + length, n)]  # still from frame a to frame a+length
        elif kind == "stops":
            a = _randint(rng, max(1, round(0.3 * n)), max(1, round(0.65 * n)))
            speeds[a:] = 0.0
            events["stop_frame"] = min(a, n)
        return _bounce(inside(), direction(), speeds, lo, hi), events
    side = int(rng.integers(4))  # 0 left, 1 right, 2 top, 3 bottom
    outside = {0: lambda p: np.array([-rx - 1.0, p[1]]), 1: lambda p: np.array([W - 1 + rx + 1.0, p[1]]),
               2: lambda p: np.array([p[0], -ry - 1.0]), 3: lambda p: np.array([p[0], H - 1 + ry + 1.0])}[side]
    ax = 0 if side < 2 else 1
    if kind == "enters":
        te = min(_randint(rng, max(1, round(0.1 * T)), max(1, round(0.55 * T))), max(T - 1, 1))
        p_end = inside()
        span = hi[ax] - lo[ax]  # end point on the far part of the frame from the entry side
        p_end[ax] = lo[ax] + span * rng.uniform(0.35, 1.0) if side in (0, 2) else lo[ax] + span * rng.uniform(0.0, 0.65)
        p_start = outside(inside())  # fully outside at frame te - 1
        v = (p_end - p_start) / max((T - 1) - (te - 1), 1)
        events["enter_frame"] = te
        return p_start + v * (np.arange(T) - (te - 1))[:, None], events
    if kind == "leaves":
        tx = min(max(_randint(rng, max(1, round(0.35 * T)), max(1, round(0.85 * T))), 1), max(T - 1, 1))
        p_start = inside()
        p_exit = outside(inside())  # fully outside from frame tx on
        v = (p_exit - p_start) / tx
        events["exit_frame"] = tx
        return p_start + v * np.arange(T)[:, None], events
    raise ValueError(f"unknown motion kind {kind!r}")


# ----------------------------------------------------------------------------- scene + rendering


def _sample_objects(rng: np.random.Generator, split: str, size_wh: tuple[int, int]) -> list[SyntheticObject]:
    W, H = size_wh
    num = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
    colors = list(COLORS_RGB)
    all_combos = [(s, c) for s in SHAPES for c in colors]
    allowed = all_combos if split == "test_ood" else [sc for sc in all_combos if sc not in HELD_OUT_COMBOS]
    held_out = sorted(HELD_OUT_COMBOS)
    forced = int(rng.integers(num)) if split == "test_ood" else -1
    combos: list[tuple[str, str]] = []
    for i in range(num):
        u = rng.random()
        if i == forced:
            combo = held_out[int(rng.integers(len(held_out)))]
        elif combos and u < 0.3:  # share a shape with an earlier object (superlatives, filters)
            shape = combos[int(rng.integers(len(combos)))][0]
            options = [sc for sc in allowed if sc[0] == shape]
            combo = options[int(rng.integers(len(options)))]
        elif combos and u < 0.55:  # share a colour
            color = combos[int(rng.integers(len(combos)))][1]
            options = [sc for sc in allowed if sc[1] == color]
            combo = options[int(rng.integers(len(options)))]
        else:
            combo = allowed[int(rng.integers(len(allowed)))]
        combos.append(combo)
    z = rng.permutation(num)
    objects = []
    for i, (shape, color) in enumerate(combos):
        size = ("small", "medium", "large")[int(rng.integers(3))]
        lo_f, hi_f = SIZE_RADIUS_FRAC[size]
        radius = max(MIN_RADIUS_PX, rng.uniform(lo_f, hi_f) * min(W, H))
        poly = _UNIT_POLYGONS[shape] * radius
        extent = (float(np.abs(poly[:, 0]).max()), float(np.abs(poly[:, 1]).max()))
        motion = MOTION_KINDS[int(rng.choice(len(MOTION_KINDS), p=MOTION_WEIGHTS))]
        objects.append(SyntheticObject(obj_id=i + 1, shape=shape, color=color, color_rgb=COLORS_RGB[color], size=size,
                                       radius_px=float(radius), area_px=float(math.pi * radius * radius),
                                       extent_xy=extent, motion=motion, z_order=int(z[i]),
                                       held_out_combo=(shape, color) in HELD_OUT_COMBOS))
    return objects


def _background(rng: np.random.Generator, size_wh: tuple[int, int], num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """A muted textured canvas larger than the frame, and per-frame crop offsets (T, 2) (slow pan)."""
    W, H = size_wh
    pan = int(math.ceil(PAN_MAX_PX_PER_FRAME * num_frames)) + 2
    th, tw = H + pan, W + pan
    base = rng.uniform(70, 150) + rng.uniform(-12, 12, size=3)
    low = cv2.resize(rng.standard_normal((th // 24 + 2, tw // 24 + 2)).astype(np.float32), (tw, th),
                     interpolation=cv2.INTER_CUBIC)
    mid = cv2.resize(rng.standard_normal((th // 6 + 2, tw // 6 + 2, 3)).astype(np.float32), (tw, th),
                     interpolation=cv2.INTER_LINEAR)
    fine = rng.standard_normal((th, tw, 1)).astype(np.float32)
    tex = base[None, None, :] + 18.0 * low[..., None] + 6.0 * mid + 4.0 * fine
    texture = np.clip(tex, 0, 255).astype(np.uint8)
    angle = rng.uniform(0, 2 * np.pi)
    speed = rng.uniform(0, PAN_MAX_PX_PER_FRAME)
    t = np.arange(num_frames) - (num_frames - 1) / 2
    off = pan / 2 + np.stack([np.sin(angle) * speed * t, np.cos(angle) * speed * t], 1)  # (dy, dx)
    return texture, np.clip(np.round(off), 0, pan).astype(np.int64)


def _noise_bank(rng: np.random.Generator, size_wh: tuple[int, int], count: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-frame grey noise as (plus, minus) uint8 (H, W, 3) pairs for saturating cv2 add/subtract."""
    W, H = size_wh
    bank = []
    for _ in range(count):
        n = np.round(rng.normal(0.0, NOISE_STD, (H, W, 1))).astype(np.int16)
        n = np.repeat(n, 3, axis=2)
        bank.append((np.clip(n, 0, 255).astype(np.uint8), np.clip(-n, 0, 255).astype(np.uint8)))
    return bank


def _render(objects: list[SyntheticObject], centers_xy: np.ndarray, texture: np.ndarray, offsets: np.ndarray,
            noise: list[tuple[np.ndarray, np.ndarray]], size_wh: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rasterise with cv2 (sub-pixel polygons, z-order): frames (T,H,W,3), label maps (T,H,W),
    unoccluded in-frame area per object (K, T)."""
    W, H = size_wh
    T = centers_xy.shape[1]
    frames = np.empty((T, H, W, 3), np.uint8)
    labels = np.zeros((T, H, W), np.uint8)
    in_frame_area = np.zeros((len(objects), T), np.int64)
    scratch = np.zeros((H, W), np.uint8)
    order = sorted(range(len(objects)), key=lambda k: objects[k].z_order)
    polys = [_UNIT_POLYGONS[o.shape] * o.radius_px for o in objects]
    shift = 4  # cv2 fixed-point bits: 1/16 px
    for t in range(T):
        oy, ox = offsets[t]
        canvas = texture[oy:oy + H, ox:ox + W].copy()
        lab = labels[t]
        for k in order:
            obj = objects[k]
            cx, cy = centers_xy[k, t]
            rx, ry = obj.extent_xy
            if cx + rx < 0 or cx - rx > W - 1 or cy + ry < 0 or cy - ry > H - 1:
                continue
            pts = np.round((polys[k] + centers_xy[k, t]) * (1 << shift)).astype(np.int32)[None]
            cv2.fillPoly(canvas, pts, obj.color_rgb, cv2.LINE_8, shift)
            cv2.fillPoly(lab, pts, obj.obj_id, cv2.LINE_8, shift)
            cv2.fillPoly(scratch, pts, 1, cv2.LINE_8, shift)
            in_frame_area[k, t] = cv2.countNonZero(scratch)
            scratch[:] = 0
        plus, minus = noise[t % len(noise)]
        cv2.subtract(cv2.add(canvas, plus, dst=canvas), minus, dst=frames[t])
    return frames, labels, in_frame_area


def _visible_area(labels: np.ndarray, num_objects: int) -> np.ndarray:
    """(K, T) visible pixel count per object from the label maps (one bincount per frame)."""
    bins = num_objects + 1
    counts = np.stack([cv2.calcHist([lab], [0], None, [bins], [0, bins]).ravel() for lab in labels], 1)
    return np.rint(counts[1:]).astype(np.int64)


# ----------------------------------------------------------------------------- facts


class _Facts:
    """Per-object quantities the query templates reason about (arrays indexed by k = obj_id - 1)."""

    def __init__(self, objects: list[SyntheticObject], centers_xy: np.ndarray, visible_px: np.ndarray,
                 in_frame_px: np.ndarray, size_wh: tuple[int, int]):
        self.objects = objects
        self.K, self.T = visible_px.shape
        self.W, self.H = size_wh
        self.centers = centers_xy
        self.area = np.array([o.area_px for o in objects])
        self.vis = visible_px
        self.in_frame_px = in_frame_px
        self.frac = visible_px / self.area[:, None]
        ext = np.array([o.extent_xy for o in objects])  # (K, 2)
        lo_box = centers_xy - ext[:, None, :]
        hi_box = centers_xy + ext[:, None, :]
        lim = np.array([self.W - 1, self.H - 1])
        self.in_frame = np.all((hi_box >= 0) & (lo_box <= lim), axis=2)
        self.fully_inside = np.all((lo_box >= 0) & (hi_box <= lim), axis=2)
        self.edges = {"left": lo_box[..., 0], "right": hi_box[..., 0], "top": lo_box[..., 1], "bottom": hi_box[..., 1]}
        self.speed = np.linalg.norm(np.diff(centers_xy, axis=1), axis=2) if self.T > 1 else np.zeros((self.K, 0))
        self.mean_speed = self.speed.mean(axis=1) if self.T > 1 else np.zeros(self.K)
        n3 = max(1, (self.T - 1) // 3)
        first = self.speed[:, :n3].mean(axis=1) if self.T > 1 else np.zeros(self.K)
        last = self.speed[:, -n3:].mean(axis=1) if self.T > 1 else np.zeros(self.K)
        self.accel_ratio = np.where(first > 1e-9, last / np.maximum(first, 1e-9), np.where(last > 1e-9, np.inf, 0.0))
        moving = self.speed > 0
        self.static = ~moving.any(axis=1)
        self.enter_frame = np.full(self.K, -1)
        self.leave_frame = np.full(self.K, -1)
        self.stop_frame = np.full(self.K, -1)
        self.pause = [None] * self.K
        self.still_tail = np.zeros(self.K, np.int64)  # transitions of rest at the end
        for k in range(self.K):
            inf = self.in_frame[k]
            if not inf[0] and inf.any():
                self.enter_frame[k] = int(np.argmax(inf))
            if inf.any() and not inf[-1]:
                self.leave_frame[k] = int(len(inf) - 1 - np.argmax(inf[::-1]))
            mv = moving[k]
            if mv.any() and not mv[-1]:
                last_move = int(len(mv) - 1 - np.argmax(mv[::-1]))
                self.stop_frame[k] = last_move + 1
                self.still_tail[k] = len(mv) - 1 - last_move
            idx = np.flatnonzero(mv)
            if len(idx) >= 2:
                gaps = np.diff(idx)
                j = int(np.argmax(gaps))
                if gaps[j] > 1:
                    self.pause[k] = (int(idx[j] + 1), int(idx[j + 1]))  # still from frame a to frame b

    def clear_or_absent(self, k: int, t: int) -> bool:
        return self.vis[k, t] == 0 or self.frac[k, t] >= CLEAR_FRAC

    def good(self, ks: Sequence[int]) -> np.ndarray:
        """(T,) frames where every object in ks is at least GOOD_FRAC visible."""
        return np.all(self.frac[list(ks)] >= GOOD_FRAC, axis=0)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive (start, end) runs of True."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    d = np.diff(m.astype(np.int8))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1
    return [(int(s), int(e)) for s, e in zip(starts, ends)]


def _longest_run(mask: np.ndarray) -> tuple[int, int] | None:
    runs = _runs(mask)
    return max(runs, key=lambda r: (r[1] - r[0], -r[0])) if runs else None


# ----------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class QueryTemplate:
    """A query family: ``phrasings`` are used in train/valid, ``ood_phrasings`` only in test_ood."""

    name: str
    tier: int
    phrasings: tuple[str, ...]
    ood_phrasings: tuple[str, ...]

    @property
    def type_id(self) -> int:
        return 0 if self.tier == 1 else 1

    @property
    def ood_only(self) -> bool:
        return not self.phrasings


def _t(name: str, tier: int, phrasings: Sequence[str], ood: Sequence[str]) -> QueryTemplate:
    return QueryTemplate(name, tier, tuple(phrasings), tuple(ood))


TEMPLATES: dict[str, QueryTemplate] = {t.name: t for t in [
    # tier 1: attributes (type 0, referring)
    _t("color_shape", 1, ["the {color} {shape}", "{color} {shape}", "the {shape} that is {color}",
                          "the {color}-coloured {shape}"],
       ["the {shape} painted {color}", "look for the {color} {shape}"]),
    _t("shape_only", 1, ["the {shape}", "the only {shape}", "the {shape}-shaped object"],
       ["the object shaped like a {shape}", "whatever has the form of a {shape}"]),
    _t("color_only", 1, ["the {color} object", "the {color} shape", "the thing that is {color}"],
       ["the sole item coloured {color}", "the one in {color}"]),
    _t("size_shape", 1, ["the {size} {shape}", "the {shape} that is {size}", "the {size} one of the two {shape_pl}"],
       ["of the two {shape_pl}, the {size} one", "the {size}-sized {shape}"]),
    _t("all_of_color", 1, ["all the {color} shapes", "every {color} object", "the {color} shapes"],
       ["each object coloured {color}", "all things in {color}"]),
    # tier 2: spatial relations and superlatives
    _t("size_extreme", 2, ["the {sup} shape", "the {sup2} object", "the shape with the {sup} size"],
       ["the {sup} figure of them all", "whichever object is {cmp} than all the others"]),
    _t("size_extreme_of_shape", 2, ["the {sup} {shape}", "the {sup2} of the {shape_pl}", "the {shape} with the {sup} size"],
       ["among the {shape_pl}, the {sup} one"]),
    _t("position_extreme", 2, ["the {adj} shape {when}", "the object {far} {when}", "{when_cap}, the {adj} object"],
       ["the figure positioned {far} {when}", "the one lying {far} of all {when}"]),
    _t("relation_to_anchor", 2, ["the {shape} {rel} the {anchor} {when}", "the {shape} that is {rel} the {anchor} {when}",
                                 "{when_cap}, the {shape} {rel} the {anchor}"],
       ["the {shape} located {rel} the {anchor} {when}"]),
    _t("nearest_to_anchor", 2, [], ["the shape closest to the {anchor} {when}", "the object nearest the {anchor} {when}"]),
    # tier 3: temporal and motion
    _t("fastest", 3, ["the {noun} that moves fastest", "the fastest-moving {noun}", "the quickest {noun}"],
       ["the {noun} travelling at the highest speed", "of all the {noun_pl}, the speediest one"]),
    _t("never_moves", 3, ["the {noun} that never moves", "the {noun} that stays still the whole time",
                          "the motionless {noun}"],
       ["the {noun} remaining stationary throughout", "the {noun} that does not budge"]),
    _t("stops", 3, ["the {noun} that stops moving", "the {noun} that comes to a halt", "the {noun} that moves and then stops"],
       ["the {noun} which ends up standing still", "the {noun} that eventually freezes in place"]),
    _t("pauses", 3, ["the {noun} that stops for a while and then moves again",
                     "the {noun} that pauses and then starts moving again"],
       ["the {noun} that halts briefly before continuing", "the {noun} taking a short break from moving"]),
    _t("speeds_up", 3, ["the {noun} that speeds up", "the {noun} that accelerates", "the {noun} moving faster and faster"],
       ["the {noun} gaining speed over time", "the {noun} whose speed keeps increasing"]),
    _t("enters", 3, ["the {noun} that enters the scene", "the {noun} that moves into the frame",
                     "the {noun} that comes in from the edge"],
       ["the {noun} arriving from outside the frame", "the {noun} that is not in the picture at first"]),
    _t("enters_order", 3, ["the {noun} that enters {order}", "the {order} {noun} to enter the frame",
                           "the {noun} that comes into the frame {order}"],
       ["of the {noun_pl} arriving from outside, the one coming {order}"]),
    _t("leaves", 3, ["the {noun} that leaves the scene", "the {noun} that exits the frame", "the {noun} that moves out of the frame"],
       ["the {noun} that disappears off the edge", "the {noun} departing the picture"]),
    _t("gets_hidden", 3, [], ["the {noun} that gets hidden behind another shape",
                              "the {noun} that becomes covered by another object"]),
    # tier 4: multi-step and multi-object
    _t("color_of_leaver", 4, ["every other shape with the same colour as the one that leaves the scene",
                              "the other objects sharing the colour of the shape that exits the frame",
                              "all remaining shapes whose colour matches the one that moves out of the frame"],
       ["whatever else is coloured like the object departing the picture"]),
    _t("shape_of_enterer", 4, ["every other object with the same shape as the one that enters the scene",
                               "the other shapes of the same kind as the one that moves into the frame"],
       ["anything else shaped like the newcomer arriving from outside the frame"]),
    _t("size_vs_anchor", 4, ["every shape {cmp} than the {anchor}", "all objects that are {cmp} than the {anchor}"],
       ["each figure of {cmp} size than the {anchor}"]),
    _t("side_of_largest", 4, ["every shape {rel} the largest one {when}", "all objects {rel} the biggest shape {when}"],
       ["{when_cap}, whatever lies {rel} the largest figure"]),
    _t("shape_of_fastest", 4, [], ["the other shapes of the same kind as the fastest one",
                                   "every other object shaped like the fastest-moving one"]),
]}
OOD_ONLY_TEMPLATES = frozenset(n for n, t in TEMPLATES.items() if t.ood_only)

_WHEN = {"start": ("at the start", "in the first frame", "at the beginning of the video"),
         "end": ("at the end", "in the last frame", "at the end of the video")}
_SIDE = {"left": ("leftmost", "furthest to the left"), "right": ("rightmost", "furthest to the right"),
         "top": ("topmost", "highest up"), "bottom": ("bottommost", "lowest down")}
_REL = {"left": ("left of", "to the left of"), "right": ("right of", "to the right of"),
        "above": ("above",), "below": ("below", "underneath")}


@dataclass
class _Candidate:
    template: str
    params: dict
    targets: tuple[int, ...]  # object indices k (obj_id - 1)
    interval: tuple[int, int]  # evidence (inclusive)


class _QueryFinder:
    """Enumerates every (template, params) whose predicate singles out its targets with a margin."""

    def __init__(self, facts: _Facts):
        self.f = facts

    # -- helpers
    def _filters(self) -> list[dict]:
        """Candidate restrictions: none, or a shape / colour shared by >= 2 objects."""
        out: list[dict] = [{}]
        objs = self.f.objects
        for key in ("shape", "color"):
            values = sorted({getattr(o, key) for o in objs})
            out += [{key: v} for v in values if sum(getattr(o, key) == v for o in objs) >= 2]
        return out

    def _members(self, flt: dict) -> list[int]:
        return [k for k, o in enumerate(self.f.objects) if all(getattr(o, a) == v for a, v in flt.items())]

    def _anchor_options(self) -> list[int]:
        """Objects uniquely named by colour + shape."""
        objs = self.f.objects
        return [k for k, o in enumerate(objs) if sum(p.shape == o.shape and p.color == o.color for p in objs) == 1]

    def _hold_run(self, f0: int, fn: Callable[[int], tuple | None]) -> tuple[int, int] | None:
        """Frames around f0 (towards the video's inside) where fn gives the same answer as at f0."""
        ref = fn(f0)
        if ref is None:
            return None
        step = 1 if f0 == 0 else -1
        t = f0
        while 0 <= t + step < self.f.T and fn(t + step) == ref:
            t += step
        return (min(f0, t), max(f0, t))

    def _visible_run(self, ks: Sequence[int]) -> tuple[int, int] | None:
        return _longest_run(self.f.good(ks))

    def _unique_extreme(self, values: dict[int, float], largest: bool, ratio: float) -> int | None:
        """Index whose value beats the runner-up by ``ratio`` (values > 0)."""
        if len(values) < 2:
            return None
        order = sorted(values, key=lambda k: values[k], reverse=largest)
        a, b = values[order[0]], values[order[1]]
        ok = a >= ratio * b if largest else b >= ratio * a
        return order[0] if ok and min(a, b) >= 0 else None

    # -- tier 1
    def tier1(self) -> list[_Candidate]:
        f, objs, out = self.f, self.f.objects, []
        for k in self._anchor_options():
            run = self._visible_run([k])
            if run:
                out.append(_Candidate("color_shape", {"color": objs[k].color, "shape": objs[k].shape}, (k,), run))
        for key, name in (("shape", "shape_only"), ("color", "color_only")):
            for v in sorted({getattr(o, key) for o in objs}):
                ks = [k for k, o in enumerate(objs) if getattr(o, key) == v]
                if len(ks) == 1 and (run := self._visible_run(ks)):
                    out.append(_Candidate(name, {key: v}, tuple(ks), run))
        for shape in sorted({o.shape for o in objs}):
            ks = [k for k, o in enumerate(objs) if o.shape == shape]
            if len(ks) == 2:
                big, small = sorted(ks, key=lambda k: -f.area[k])
                if f.area[big] >= SIZE_RATIO * f.area[small]:
                    for which, k in (("big", big), ("small", small)):
                        if run := self._visible_run([k]):
                            out.append(_Candidate("size_shape", {"shape": shape, "size": which}, (k,), run))
        for color in sorted({o.color for o in objs}):
            ks = [k for k, o in enumerate(objs) if o.color == color]
            if 2 <= len(ks) < len(objs) and (run := self._visible_run(ks)):
                out.append(_Candidate("all_of_color", {"color": color}, tuple(ks), run))
        return out

    # -- tier 2
    def tier2(self) -> list[_Candidate]:
        f, objs, out = self.f, self.f.objects, []
        areas = {k: float(f.area[k]) for k in range(f.K)}
        for which, largest in (("largest", True), ("smallest", False)):
            k = self._unique_extreme(areas, largest, SIZE_RATIO)
            if k is not None and (run := self._visible_run([k])):
                out.append(_Candidate("size_extreme", {"which": which}, (k,), run))
            for shape in sorted({o.shape for o in objs}):
                sub = {j: a for j, a in areas.items() if objs[j].shape == shape}
                k = self._unique_extreme(sub, largest, SIZE_RATIO)
                if k is not None and (run := self._visible_run([k])):
                    out.append(_Candidate("size_extreme_of_shape", {"which": which, "shape": shape}, (k,), run))
        for when, f0 in (("start", 0), ("end", f.T - 1)):
            for side in ("left", "right", "top", "bottom"):
                run = self._hold_run(f0, lambda t, s=side: self._position_extreme_at(t, s))
                if run:
                    k = self._position_extreme_at(f0, side)[0]
                    out.append(_Candidate("position_extreme", {"side": side, "when": when}, (k,), run))
            for a in self._anchor_options():
                for shape in sorted({o.shape for o in objs}):
                    for rel in ("left", "right", "above", "below"):
                        fn = lambda t, a=a, s=shape, r=rel: self._relation_at(t, a, s, r)
                        run = self._hold_run(f0, fn)
                        if run:
                            params = {"shape": shape, "rel": rel, "anchor_color": objs[a].color,
                                      "anchor_shape": objs[a].shape, "when": when}
                            out.append(_Candidate("relation_to_anchor", params, fn(f0), run))
                fn = lambda t, a=a: self._nearest_at(t, a)
                run = self._hold_run(f0, fn)
                if run:
                    params = {"anchor_color": objs[a].color, "anchor_shape": objs[a].shape, "when": when}
                    out.append(_Candidate("nearest_to_anchor", params, fn(f0), run))
        return out

    def _frame_clear(self, t: int) -> bool:
        return all(self.f.clear_or_absent(k, t) for k in range(self.f.K))

    def _position_extreme_at(self, t: int, side: str) -> tuple[int] | None:
        f = self.f
        if not self._frame_clear(t):
            return None
        vis = [k for k in range(f.K) if f.vis[k, t] > 0]
        if len(vis) < 2:
            return None
        ax = 0 if side in ("left", "right") else 1
        sign = 1.0 if side in ("left", "top") else -1.0  # smaller coordinate wins for left/top
        centre = {k: sign * f.centers[k, t, ax] for k in vis}
        edge = {k: sign * f.edges[side][k, t] for k in vis}
        order = sorted(vis, key=lambda k: centre[k])
        gap = centre[order[1]] - centre[order[0]]
        edge_best = min(vis, key=lambda k: edge[k])
        edge_gap = min(edge[k] for k in vis if k != edge_best) - edge[edge_best]
        if gap < POS_GAP_FRAC * (f.W if ax == 0 else f.H) or edge_best != order[0] or edge_gap < 2.0:
            return None
        return (order[0],)

    def _relation_at(self, t: int, a: int, shape: str, rel: str) -> tuple[int, ...] | None:
        f = self.f
        if not self._frame_clear(t) or f.vis[a, t] == 0:
            return None
        cands = [k for k, o in enumerate(f.objects) if o.shape == shape and k != a and f.vis[k, t] > 0]
        if len(cands) < 2:
            return None
        ax = 0 if rel in ("left", "right") else 1
        sign = -1.0 if rel in ("left", "above") else 1.0  # satisfy: sign * (c - anchor) > margin
        margin = REL_GAP_FRAC * (f.W if ax == 0 else f.H)
        d = {k: sign * (f.centers[k, t, ax] - f.centers[a, t, ax]) for k in cands}
        if any(abs(v) < margin for v in d.values()):
            return None
        hits = tuple(k for k in cands if d[k] > 0)
        return hits if len(hits) == 1 else None

    def _nearest_at(self, t: int, a: int) -> tuple[int] | None:
        f = self.f
        if not self._frame_clear(t) or f.vis[a, t] == 0:
            return None
        cands = [k for k in range(f.K) if k != a and f.vis[k, t] > 0]
        dist = {k: float(np.linalg.norm(f.centers[k, t] - f.centers[a, t])) for k in cands}
        k = self._unique_extreme(dist, False, NEAR_RATIO)
        return None if k is None else (k,)

    # -- tier 3
    def tier3(self) -> list[_Candidate]:
        f, out = self.f, []
        T = f.T
        for flt in self._filters():
            ks = self._members(flt)
            if len(ks) < 2:
                continue
            speeds = {k: float(f.mean_speed[k]) for k in ks}
            k = self._unique_extreme(speeds, True, SPEED_RATIO)
            if k is not None and speeds[k] >= MOVING_MIN_PX and (run := self._visible_run([k])):
                out.append(_Candidate("fastest", dict(flt), (k,), run))
            static = [k for k in ks if f.static[k]]
            if len(static) == 1 and all(f.mean_speed[j] >= MOVING_MIN_PX for j in ks if j != static[0]):
                if run := self._visible_run(static):
                    out.append(_Candidate("never_moves", dict(flt), tuple(static), run))
            stoppers = [k for k in ks if f.stop_frame[k] >= 0]
            if (len(stoppers) == 1 and f.still_tail[stoppers[0]] >= max(3, T // 8)
                    and all(f.pause[j] is None for j in ks)):
                k = stoppers[0]
                s = int(f.stop_frame[k])
                out.append(_Candidate("stops", dict(flt), (k,), (max(0, s - 3), min(T - 1, s + 3))))
            pausers = [k for k in ks if f.pause[k] is not None]
            if len(pausers) == 1 and all(f.stop_frame[j] < 0 for j in ks):
                k = pausers[0]
                a, b = f.pause[k]
                if b - a >= 2:
                    out.append(_Candidate("pauses", dict(flt), (k,), (max(0, a - 2), min(T - 1, b + 2))))
            ratios = {k: float(f.accel_ratio[k]) for k in ks}
            hi = [k for k in ks if ratios[k] >= ACCEL_HI and np.isfinite(ratios[k])]
            if len(hi) == 1 and all(ratios[j] <= ACCEL_LO for j in ks if j != hi[0]) and T >= 9:
                if run := self._visible_run(hi):
                    out.append(_Candidate("speeds_up", dict(flt), tuple(hi), run))
            enterers = [k for k in ks if f.enter_frame[k] >= 1]
            others_present = all(f.frac[j, 0] >= CLEAR_FRAC for j in ks if j not in enterers)
            if len(enterers) == 1 and others_present:
                k = enterers[0]
                out.append(_Candidate("enters", dict(flt), (k,), self._entry_interval(k)))
            if len(enterers) >= 2 and others_present:
                gap = max(2, T // 16)
                by_frame = sorted(enterers, key=lambda j: f.enter_frame[j])
                for order, k, nxt in (("first", by_frame[0], by_frame[1]), ("last", by_frame[-1], by_frame[-2])):
                    if abs(int(f.enter_frame[k]) - int(f.enter_frame[nxt])) >= gap:
                        ivs = [self._entry_interval(j) for j in enterers]
                        iv = (min(i[0] for i in ivs), max(i[1] for i in ivs))
                        out.append(_Candidate("enters_order", {**flt, "order": order}, (k,), iv))
            leavers = [k for k in ks if f.leave_frame[k] >= 0]
            if len(leavers) == 1 and all(f.frac[j, T - 1] >= CLEAR_FRAC for j in ks if j != leavers[0]):
                k = leavers[0]
                out.append(_Candidate("leaves", dict(flt), (k,), self._exit_interval(k)))
            hidden = self._hidden_min_share(ks)
            if hidden is not None:
                lows = [k for k in ks if hidden[k] <= HIDDEN_HI]
                if len(lows) == 1 and all(hidden[j] >= HIDDEN_LO for j in ks if j != lows[0]):
                    k = lows[0]
                    share = np.where(f.fully_inside[k], f.frac[k], np.inf)
                    t_min = int(np.argmin(share))
                    run = next(r for r in _runs(share < 0.55) if r[0] <= t_min <= r[1])
                    out.append(_Candidate("gets_hidden", dict(flt), (k,), (max(0, run[0] - 2), min(T - 1, run[1] + 2))))
        return out

    def _hidden_min_share(self, ks: Sequence[int]) -> dict[int, float] | None:
        f = self.f
        out = {}
        for k in ks:
            if not f.fully_inside[k].any():
                return None  # never fully inside: its share is not defined, the query would be unclear
            out[k] = float(f.frac[k][f.fully_inside[k]].min())
        return out

    def _entry_interval(self, k: int) -> tuple[int, int]:
        f = self.f
        s = int(f.enter_frame[k])
        inside = np.flatnonzero(f.fully_inside[k, s:])
        e = s + int(inside[0]) if len(inside) else f.T - 1
        return s, min(f.T - 1, e + 2)

    def _exit_interval(self, k: int) -> tuple[int, int]:
        f = self.f
        e = int(f.leave_frame[k])
        inside = np.flatnonzero(f.fully_inside[k, :e + 1])
        s = int(inside[-1]) if len(inside) else 0
        return max(0, s - 2), e

    # -- tier 4
    def tier4(self) -> list[_Candidate]:
        f, objs, out = self.f, self.f.objects, []
        T = f.T
        everyone = list(range(f.K))
        leavers = [k for k in everyone if f.leave_frame[k] >= 0]
        if len(leavers) == 1 and all(f.frac[j, T - 1] >= CLEAR_FRAC for j in everyone if j != leavers[0]):
            L = leavers[0]
            ts = tuple(k for k in everyone if k != L and objs[k].color == objs[L].color)
            if ts:
                out.append(_Candidate("color_of_leaver", {}, ts, self._exit_interval(L)))
        enterers = [k for k in everyone if f.enter_frame[k] >= 1]
        if len(enterers) == 1 and all(f.frac[j, 0] >= CLEAR_FRAC for j in everyone if j != enterers[0]):
            E = enterers[0]
            ts = tuple(k for k in everyone if k != E and objs[k].shape == objs[E].shape)
            if ts:
                out.append(_Candidate("shape_of_enterer", {}, ts, self._entry_interval(E)))
        for a in self._anchor_options():
            for cmp, sign in (("bigger", 1.0), ("smaller", -1.0)):
                rel = {k: (f.area[k] / f.area[a]) ** sign for k in everyone if k != a}
                if all(v >= SIZE_RATIO or v <= 1 / SIZE_RATIO for v in rel.values()):
                    ts = tuple(k for k, v in rel.items() if v >= SIZE_RATIO)
                    if ts:
                        good = f.good([a, *ts])
                        iv = _longest_run(good) or self._visible_run([a]) or (0, T - 1)
                        out.append(_Candidate("size_vs_anchor", {"cmp": cmp, "anchor_color": objs[a].color,
                                                                 "anchor_shape": objs[a].shape}, ts, iv))
        largest = self._unique_extreme({k: float(f.area[k]) for k in everyone}, True, SIZE_RATIO)
        if largest is not None:
            for when, f0 in (("start", 0), ("end", T - 1)):
                for rel in ("left", "right"):
                    fn = lambda t, L=largest, r=rel: self._side_of_at(t, L, r)
                    run = self._hold_run(f0, fn)
                    if run:
                        out.append(_Candidate("side_of_largest", {"rel": rel, "when": when}, fn(f0), run))
        fastest = self._unique_extreme({k: float(f.mean_speed[k]) for k in everyone}, True, SPEED_RATIO)
        if fastest is not None and f.mean_speed[fastest] >= MOVING_MIN_PX:
            ts = tuple(k for k in everyone if k != fastest and objs[k].shape == objs[fastest].shape)
            if ts:
                out.append(_Candidate("shape_of_fastest", {}, ts, self._visible_run([fastest]) or (0, T - 1)))
        return out

    def _side_of_at(self, t: int, L: int, rel: str) -> tuple[int, ...] | None:
        f = self.f
        if not self._frame_clear(t) or f.vis[L, t] == 0:
            return None
        cands = [k for k in range(f.K) if k != L and f.vis[k, t] > 0]
        sign = -1.0 if rel == "left" else 1.0
        d = {k: sign * (f.centers[k, t, 0] - f.centers[L, t, 0]) for k in cands}
        if any(abs(v) < REL_GAP_FRAC * f.W for v in d.values()):
            return None
        hits = tuple(k for k in cands if d[k] > 0)
        return hits or None


# ----------------------------------------------------------------------------- phrasing and labels


def _words(params: dict, rng: np.random.Generator) -> dict[str, str]:
    """Surface words for a template's parameters (random synonyms where there are several)."""
    pick = lambda seq: seq[int(rng.integers(len(seq)))]  # noqa: E731
    w: dict[str, str] = {}
    if "shape" in params:
        w["shape"], w["shape_pl"] = params["shape"], params["shape"] + "s"
    if "color" in params:
        w["color"] = params["color"]
    if "size" in params:
        w["size"] = params["size"]
    if "which" in params:
        big = params["which"] == "largest"
        w["sup"], w["sup2"] = ("largest", "biggest") if big else ("smallest", "tiniest")
        w["cmp"] = "bigger" if big else "smaller"
    if "cmp" in params:
        w["cmp"] = params["cmp"]
    if "side" in params:
        w["adj"], w["far"] = _SIDE[params["side"]]
    if "rel" in params:
        w["rel"] = pick(_REL[params["rel"]])
    if "when" in params:
        w["when"] = pick(_WHEN[params["when"]])
        w["when_cap"] = w["when"][0].upper() + w["when"][1:]
    if "anchor_color" in params:
        w["anchor"] = f"{params['anchor_color']} {params['anchor_shape']}"
    if "order" in params:
        w["order"] = params["order"]
    # noun for filtered motion queries
    if "shape" in params:
        w["noun"], w["noun_pl"] = params["shape"], params["shape"] + "s"
    elif "color" in params:
        n = pick(("shape", "object"))
        w["noun"], w["noun_pl"] = f"{params['color']} {n}", f"{params['color']} {n}s"
    else:
        n = pick(("shape", "object"))
        w["noun"], w["noun_pl"] = n, n + "s"
    return w


def _difficulty(tier: int, targets: Sequence[int], interval: tuple[int, int], facts: _Facts) -> tuple[float, dict]:
    """D in [1, 10] from the documented formula (module docstring)."""
    f = facts
    occl = []
    for k in targets:
        inf = f.in_frame_px[k] > 0
        hidden = (f.vis[k] < 0.75 * f.in_frame_px[k]) & inf
        occl.append(hidden.sum() / max(inf.sum(), 1))
    image_px = f.W * f.H
    small = [1 - min(1.0, f.area[k] / (0.04 * image_px)) for k in targets]
    diag = math.hypot(f.W, f.H)
    motion = [min(1.0, f.mean_speed[k] / (0.012 * diag)) for k in targets]
    terms = {"tier": (tier - 1) / 3, "clutter": (f.K - 2) / 4, "occlusion": float(np.mean(occl)),
             "smallness": float(np.mean(small)), "motion": float(np.mean(motion)),
             "multi_target": float(len(targets) > 1), "short_evidence": 1 - (interval[1] - interval[0] + 1) / f.T}
    d = (1 + 3 * terms["tier"] + 1.5 * terms["clutter"] + 1.5 * terms["occlusion"] + 1.0 * terms["smallness"]
         + 1.0 * terms["motion"] + 0.75 * terms["multi_target"] + 1.25 * terms["short_evidence"])
    return round(float(min(10.0, max(1.0, d))), 2), {k: round(float(v), 4) for k, v in terms.items()}


def _finalize(c: _Candidate, facts: _Facts) -> tuple[tuple[int, int], int] | None:
    """Key interval and target frame: the best frame in the evidence interval where every target is
    >= 50 % visible; if there is none inside, the interval is extended to the nearest such frame."""
    good = facts.good(c.targets)
    frames = np.flatnonzero(good)
    if len(frames) == 0:
        return None
    s, e = c.interval
    inside = frames[(frames >= s) & (frames <= e)]
    if len(inside) == 0:
        dist = np.where(frames < s, s - frames, frames - e)
        t = int(frames[int(np.argmin(dist))])
        s, e = min(s, t), max(e, t)
        inside = np.array([t])
    share = np.minimum(facts.frac[list(c.targets)][:, inside], 1.0).min(axis=0)
    mid = (s + e) / 2
    best = max(range(len(inside)), key=lambda i: (round(float(share[i]), 2), -abs(inside[i] - mid), -inside[i]))
    return (int(s), int(e)), int(inside[best])


def _select(cands: list[_Candidate], split: str, facts: _Facts, rng: np.random.Generator,
            max_expressions: int) -> list[tuple[_Candidate, tuple[int, int], int]]:
    """Pick a varied subset: round robin over tiers, least-used template first."""
    allowed = [c for c in cands if split == "test_ood" or c.template not in OOD_ONLY_TEMPLATES]
    by_tier: dict[int, list[_Candidate]] = {1: [], 2: [], 3: [], 4: []}
    for i in rng.permutation(len(allowed)):
        by_tier[TEMPLATES[allowed[i].template].tier].append(allowed[i])
    if split == "test_ood":  # novel templates and held-out combinations first
        for tier in by_tier:
            by_tier[tier].sort(key=lambda c: not (c.template in OOD_ONLY_TEMPLATES
                                                  or any(facts.objects[k].held_out_combo for k in c.targets)))
    chosen, used, seen = [], {}, set()
    while len(chosen) < max_expressions and any(by_tier.values()):
        for tier in (1, 2, 3, 4):
            if len(chosen) >= max_expressions or not by_tier[tier]:
                continue
            lst = by_tier[tier]
            i = min(range(len(lst)), key=lambda j: (used.get(lst[j].template, 0), j))
            c = lst.pop(i)
            key = (c.template, json.dumps(c.params, sort_keys=True))
            if key in seen:
                continue
            fin = _finalize(c, facts)
            if fin is None:
                continue
            seen.add(key)
            used[c.template] = used.get(c.template, 0) + 1
            chosen.append((c, *fin))
    return chosen


# ----------------------------------------------------------------------------- one video


def video_name(split: str, index: int) -> str:
    return f"{split}_{index:05d}"


def _check_split(split: str) -> None:
    if split not in SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")


def generate_video(seed: int, split: str = "train", index: int = 0, frames: int = DEFAULT_NUM_FRAMES,
                   size: tuple[int, int] = DEFAULT_SIZE_WH,
                   max_expressions: int = MAX_EXPRESSIONS_PER_VIDEO) -> SyntheticVideo:
    """Generate one video in memory, seeded from (seed, split, index); ``size`` is (W, H)."""
    _check_split(split)
    _check_shape(frames, size)
    W, H = int(size[0]), int(size[1])
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), SPLIT_CODES[split], int(index)]))
    for attempt in range(1, MAX_SCENE_ATTEMPTS + 1):
        objects = _sample_objects(rng, split, (W, H))
        centers = np.empty((len(objects), frames, 2))
        for k, obj in enumerate(objects):
            centers[k], obj.events = _simulate_motion(obj.motion, rng, obj.extent_xy, (W, H), frames)
        texture, offsets = _background(rng, (W, H), frames)
        noise = _noise_bank(rng, (W, H))
        rgb, labels, in_frame_px = _render(objects, centers, texture, offsets, noise, (W, H))
        visible_px = _visible_area(labels, len(objects))
        facts = _Facts(objects, centers, visible_px, in_frame_px, (W, H))
        finder = _QueryFinder(facts)
        cands = finder.tier1() + finder.tier2() + finder.tier3() + finder.tier4()
        chosen = _select(cands, split, facts, rng, max_expressions)
        if len(chosen) >= min(MIN_EXPRESSIONS_PER_VIDEO, max_expressions):
            break
    else:  # pragma: no cover - practically unreachable: attribute queries almost always exist
        raise RuntimeError(f"could not build unambiguous queries for {video_name(split, index)} "
                           f"after {MAX_SCENE_ATTEMPTS} scenes")
    expressions = []
    for i, (c, interval, target_frame) in enumerate(chosen):
        tpl = TEMPLATES[c.template]
        pool, tag = (tpl.ood_phrasings, "ood") if split == "test_ood" else (tpl.phrasings, "id")
        j = int(rng.integers(len(pool)))
        text = pool[j].format(**_words(c.params, rng))
        d, terms = _difficulty(tpl.tier, c.targets, interval, facts)
        expressions.append(SyntheticExpression(
            exp_id=str(i), text=text, obj_ids=tuple(sorted(k + 1 for k in c.targets)), type_id=tpl.type_id,
            tier=tpl.tier, difficulty=d, template=c.template, params=dict(c.params), phrasing_id=f"{tag}:{j}",
            key_interval=interval, target_frame=target_frame, difficulty_terms=terms))
    return SyntheticVideo(name=video_name(split, index), split=split, index=int(index), seed=int(seed), fps=FPS,
                          frames=rgb, label_maps=labels, centers_xy=centers, visible_area_px=visible_px,
                          in_frame_area_px=in_frame_px, objects=objects, expressions=expressions,
                          scene_attempts=attempt)


# ----------------------------------------------------------------------------- dataset writer


def _check_shape(frames: int, size: Sequence[int]) -> None:
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < MIN_FRAMES:
        raise ValueError(f"frames must be an integer >= {MIN_FRAMES}, got {frames!r}")
    if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and MIN_SIDE_PX <= v <= MAX_SIDE_PX for v in size):
        raise ValueError(f"size must be (width, height) with each side in {MIN_SIDE_PX}..{MAX_SIDE_PX} px, got {size!r}")


def split_counts(num_videos: int, splits: Sequence[str]) -> dict[str, int]:
    """How many of ``num_videos`` go to each split (SPLIT_FRACTIONS, largest remainder, >= 1 each
    while there are enough videos). The first n videos of a split do not depend on the total."""
    weights = np.array([SPLIT_FRACTIONS[s] for s in splits])
    share = weights / weights.sum() * num_videos
    counts = np.floor(share).astype(np.int64)
    for i in np.argsort(-(share - counts), kind="stable")[:num_videos - int(counts.sum())]:
        counts[i] += 1
    for i in range(len(splits)):  # every split gets a video while there are enough
        if counts[i] == 0 and num_videos >= len(splits):
            counts[int(np.argmax(counts))] -= 1
            counts[i] += 1
    return {s: int(c) for s, c in zip(splits, counts)}


def _write_jpeg(path: Path, frame_rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError(f"cannot encode JPEG {path}")
    path.write_bytes(buf.tobytes())


def rle_encode_frames(masks_hwt: np.ndarray) -> list[dict]:
    """Encode a (H, W, T) Fortran-ordered bool/uint8 stack in one pycocotools call; each entry is
    exactly what ``masks.rle_encode`` gives for that frame (``{"size": [H, W], "counts": str}``)."""
    from pycocotools import mask as mask_utils

    arr = np.asfortranarray(masks_hwt).view(np.uint8) if masks_hwt.dtype == bool else np.asfortranarray(masks_hwt, np.uint8)
    return [{"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")}
            for r in mask_utils.encode(arr)]


def _video_record(video: SyntheticVideo) -> dict:
    """Everything the dataset JSON files need from one video (no pixel arrays). Masks are encoded a
    video at a time (one pycocotools call per object) instead of one call per frame."""
    # (H, W, T) Fortran view of the label maps: memory order t, w, h == C order of (T, W, H)
    labels_hwt = np.ascontiguousarray(video.label_maps.transpose(0, 2, 1)).T
    rles = {}
    for obj in video.objects:
        encoded = rle_encode_frames(labels_hwt == obj.obj_id)
        present = video.visible_area_px[obj.obj_id - 1] > 0
        rles[obj.obj_id] = [r if p else None for r, p in zip(encoded, present)]
    foreground = rle_encode_frames(labels_hwt > 0)
    return {"name": video.name, "split": video.split, "frames": video.frame_names(), "height": video.height,
            "width": video.width, "rles": rles, "foreground": foreground,
            "objects": {str(o.obj_id): o.to_json() for o in video.objects},
            "centers_xy": np.round(video.centers_xy, 2).tolist(),
            "expressions": [e.__dict__ for e in video.expressions], "scene_attempts": video.scene_attempts}


def _job(args: tuple) -> dict:
    """Worker: generate one video, write its JPEGs under ``root``, return its JSON record."""
    seed, split, index, frames, size, root = args
    video = generate_video(seed, split, index, frames, size)
    folder = Path(root) / "JPEGImages" / video.name
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in zip(video.frame_names(), video.frames):
        _write_jpeg(folder / f"{name}.jpg", frame)
    return _video_record(video)


def _worker_init() -> None:
    cv2.setNumThreads(1)


def is_synthetic_output(path: str | Path) -> bool:
    """True if ``path`` holds a dataset written by this generator (may then be replaced)."""
    meta = Path(path) / "synthetic_meta.json"
    if not meta.is_file():
        return False
    try:
        with open(meta) as fh:
            data = json.load(fh)
        return isinstance(data, dict) and "generator" in data and "version" in data
    except (OSError, ValueError):
        return False


def _prepare_out(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output path {out_dir} exists and is not a directory; choose another --out")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite and not is_synthetic_output(out_dir):
        raise ValueError(f"output directory {out_dir} is not empty and is not a previous synth output; "
                         "pass --overwrite to replace it or choose another --out")


def _dump_json(path: Path, obj) -> None:
    with open(path, "w") as fh:
        json.dump(obj, fh, separators=(",", ":"))


def generate(out_dir: str | Path, num_videos: int = DEFAULT_NUM_VIDEOS, frames: int = DEFAULT_NUM_FRAMES,
             size: tuple[int, int] = DEFAULT_SIZE_WH, seed: int = 0, splits: Sequence[str] = SPLITS,
             overlay: int = 0, overwrite: bool = False, workers: int | None = None,
             progress: bool = False) -> Path:
    """Write a synthetic dataset in the ReVOS layout and return its directory.

    ``OUT/JPEGImages/<video>/<00000>.jpg``, ``mask_dict.json`` {anno_id: [RLE or null per frame]},
    ``mask_dict_foreground.json`` {video: [RLE per frame]}, ``meta_expressions_<split>_.json``,
    ``synthetic_meta.json`` (extra fields) and, with ``overlay`` > 0, ``overlays/<video>_exp<id>.mp4``.
    ``num_videos`` is shared among ``splits`` (``split_counts``). The dataset is built in a hidden
    sibling folder and renamed into place, so an interrupted run leaves nothing complete-looking.
    """
    if isinstance(num_videos, bool) or not isinstance(num_videos, (int, np.integer)) or num_videos < 1:
        raise ValueError(f"number of videos must be a positive integer, got {num_videos!r}")
    _check_shape(frames, size)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    splits = tuple(splits)
    if not splits:
        raise ValueError("no splits requested; choose from " + ", ".join(SPLITS))
    for s in splits:
        _check_split(s)
    if len(set(splits)) != len(splits):
        raise ValueError(f"splits repeated: {', '.join(splits)}")
    if overlay < 0:
        raise ValueError(f"overlay count must be >= 0, got {overlay}")
    out_dir = Path(out_dir)
    _prepare_out(out_dir, overwrite)
    W, H = int(size[0]), int(size[1])
    counts = split_counts(int(num_videos), splits)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.synth-tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    jobs = [(int(seed), s, i, int(frames), (W, H), str(tmp)) for s in splits for i in range(counts[s])]
    if workers is None:
        workers = 1 if len(jobs) < 8 else max(1, min(2, os.cpu_count() or 1))
    t0 = time.perf_counter()
    try:
        records = _run_jobs(jobs, workers, progress)
        _write_dataset(tmp, records, seed=int(seed), frames=int(frames), size_wh=(W, H), splits=splits,
                       counts=counts, elapsed_s=time.perf_counter() - t0)
        if overlay:
            write_overlays(tmp, records, overlay, seed=int(seed), frames=int(frames), size_wh=(W, H))
        _replace_dir(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _run_jobs(jobs: list[tuple], workers: int, progress: bool) -> list[dict]:
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="synth", unit="video", disable=not progress)
    records = []
    try:
        if workers <= 1:
            for job in jobs:
                records.append(_job(job))
                bar.update(1)
        else:
            import multiprocessing as mp

            # spawn: never fork a parent that may hold torch / OpenCV thread pools
            with mp.get_context("spawn").Pool(workers, initializer=_worker_init) as pool:
                for rec in pool.imap(_job, jobs, chunksize=1):
                    records.append(rec)
                    bar.update(1)
    finally:
        bar.close()
    return records


def _write_dataset(root: Path, records: list[dict], *, seed: int, frames: int, size_wh: tuple[int, int],
                   splits: Sequence[str], counts: dict[str, int], elapsed_s: float) -> None:
    mask_dict, foreground = {}, {}
    metas = {s: {"videos": {}} for s in splits}
    side = {"version": FORMAT_VERSION,
            "generator": {"seed": seed, "frames": frames, "size": list(size_wh), "fps": FPS, "splits": list(splits),
                          "videos_per_split": counts, "jpeg_quality": JPEG_QUALITY,
                          "held_out_combos": sorted([list(c) for c in HELD_OUT_COMBOS]),
                          "ood_only_templates": sorted(OOD_ONLY_TEMPLATES),
                          "templates": {n: {"tier": t.tier, "type_id": t.type_id, "phrasings": list(t.phrasings),
                                            "ood_phrasings": list(t.ood_phrasings)} for n, t in TEMPLATES.items()}},
            "videos": {}, "expressions": {}}
    next_anno = 0
    for rec in records:
        name = rec["name"]
        anno_of = {}
        for obj_id, rles in rec["rles"].items():
            anno_of[obj_id] = str(next_anno)
            mask_dict[str(next_anno)] = rles
            next_anno += 1
        foreground[name] = rec["foreground"]
        exps = {}
        for e in rec["expressions"]:
            exps[e["exp_id"]] = {"exp": e["text"], "obj_id": list(e["obj_ids"]),
                                 "anno_id": [anno_of[o] for o in e["obj_ids"]], "type_id": e["type_id"]}
            side["expressions"][f"{name}/{e['exp_id']}"] = {
                "split": rec["split"], "tier": e["tier"], "difficulty": e["difficulty"], "template": e["template"],
                "key_interval": list(e["key_interval"]), "target_frame": e["target_frame"],
                "num_targets": len(e["obj_ids"]), "params": e["params"], "phrasing_id": e["phrasing_id"],
                "difficulty_terms": e["difficulty_terms"]}
        metas[rec["split"]]["videos"][name] = {"frames": rec["frames"], "height": rec["height"], "width": rec["width"],
                                               "expressions": exps}
        objects = {oid: {**o, "anno_id": anno_of[int(oid)]} for oid, o in rec["objects"].items()}
        side["videos"][name] = {"split": rec["split"], "fps": FPS, "objects": objects,
                                "centers_xy": rec["centers_xy"], "scene_attempts": rec["scene_attempts"]}
    _dump_json(root / "mask_dict.json", mask_dict)
    _dump_json(root / "mask_dict_foreground.json", foreground)
    for s in splits:
        _dump_json(root / f"meta_expressions_{s}_.json", metas[s])
    _dump_json(root / "synthetic_meta.json", side)  # written last: marks a finished dataset


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.synth-old-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_overlays(root: str | Path, records: list[dict], count: int, *, seed: int, frames: int,
                   size_wh: tuple[int, int]) -> list[Path]:
    """Render ``count`` samples (video + one query: its targets' ground-truth masks, the query as
    caption, the target frame marked with the targets' boxes) to ``root/overlays/*.mp4``. Sample i
    takes video i (cycling) and, in turn, a query of tier 4, 3, 2, 1 where available."""
    from videoseg_r1.masks import mask_box_xyxy
    from videoseg_r1.video import write_overlay_video

    paths = []
    for i in range(min(count, 10_000)):
        rec = records[i % len(records)]
        video = generate_video(seed, rec["split"], int(rec["name"].rsplit("_", 1)[1]), frames, size_wh)
        want = 4 - (i // len(records)) % 4
        exp = min(video.expressions, key=lambda e: (abs(e.tier - want), int(e.exp_id)))
        t_key = exp.target_frame
        masks = [{k: video.label_maps[t] == k for k in exp.obj_ids} for t in range(video.num_frames)]
        boxes = {k: b for k in exp.obj_ids if (b := mask_box_xyxy(masks[t_key][k])) is not None}
        caption = f'"{exp.text}"  (tier {exp.tier}, D={exp.difficulty:g}, key {exp.key_interval[0]}-{exp.key_interval[1]})'
        path = Path(root) / "overlays" / f"{video.name}_exp{exp.exp_id}.mp4"
        if path.exists():
            continue
        write_overlay_video(path, list(video.frames), masks, fps=video.fps, key_frame_idx=t_key, boxes_xyxy=boxes,
                            text=caption)
        paths.append(path)
    return paths
