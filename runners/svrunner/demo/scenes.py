"""The demo's pictures: four shapes, one per quadrant, drawn with the standard library only.

A scene is, per quadrant, a (shape, colour) pair. Both demo datasets ask about one corner of a
scene: DemoMCQ for its colour, DemoShapes for its shape; the other attribute is a nuisance drawn
at random. Pixels are rasterised here (no Pillow), so their bytes do not depend on any library's
version.
"""

from __future__ import annotations

import functools
import random

DEMO_DATA_SEED = 20261127  # the datasets' rows

IMG_SIZE = 64
BACKGROUND = (250, 250, 250)
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 30),
    "green": (30, 160, 60),
    "blue": (30, 70, 220),
    "purple": (130, 40, 170),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
}
SHAPES = ("circle", "square", "triangle", "diamond")
CORNERS = ("top left", "top right", "bottom left", "bottom right")  # quadrant 0..3
OPTION_LETTERS = "ABCD"


class Kind:
    """One demo dataset: what is asked, its fixed option list, and the nuisance attribute."""

    def __init__(self, name: str, question: str, generic: str, options: tuple[str, ...],
                 nuisance: tuple[str, ...], category: dict[str, str]) -> None:  # fmt: skip
        self.name, self.question, self.generic = name, question, generic
        self.options, self.nuisance, self.category = options, nuisance, category


KINDS: dict[str, Kind] = {
    "DemoMCQ": Kind(
        "DemoMCQ",
        "What colour is the shape in the {corner} corner?",
        "What colour is the shape?",
        ("red", "green", "blue", "yellow"),
        SHAPES,
        {"red": "warm", "yellow": "warm", "green": "cool", "blue": "cool"},
    ),
    "DemoShapes": Kind(
        "DemoShapes",
        "Which shape is in the {corner} corner?",
        "Which shape is it?",
        SHAPES,
        tuple(COLOURS),
        # uneven category sizes on purpose: exercises the stratified limit
        {"circle": "curved", "square": "quadrilateral", "diamond": "quadrilateral",
         "triangle": "triangle"},
    ),
}


def _inside(shape: str, x: float, y: float, cx: float, cy: float, r: float) -> bool:
    """Point-in-shape test in pixel coordinates (pixel centres)."""
    dx, dy = x - cx, y - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return abs(dx) <= r * 0.8 and abs(dy) <= r * 0.8
    if shape == "diamond":
        return abs(dx) + abs(dy) <= r
    if shape == "triangle":  # apex up, base at cy + r/2
        if dy < -r or dy > r * 0.5:
            return False
        return abs(dx) <= (dy + r) / 1.5 * 0.87  # widens linearly from apex to base
    raise ValueError(shape)


@functools.cache
def _mask(shape: str, quadrant: int) -> tuple[int, ...]:
    """Flat pixel indices of ``shape`` drawn in ``quadrant`` (fixed centre and size)."""
    half = IMG_SIZE // 2
    cx, cy = half / 2 + half * (quadrant % 2), half / 2 + half * (quadrant // 2)
    return tuple(
        py * IMG_SIZE + px
        for py in range(IMG_SIZE)
        for px in range(IMG_SIZE)
        if _inside(shape, px + 0.5, py + 0.5, cx, cy, half * 0.36)
    )


Scene = tuple[tuple[str, str], ...]  # per quadrant: (shape, colour name); () = blank


def render_scene_rgb(scene: Scene) -> bytes:
    """Row-major RGB8 pixels of a scene (what the PNG holds, and what training sees)."""
    pixels = bytearray(bytes(BACKGROUND) * (IMG_SIZE * IMG_SIZE))
    for quadrant, (shape, colour) in enumerate(scene):
        rgb = bytes(COLOURS[colour])
        for i in _mask(shape, quadrant):
            pixels[3 * i : 3 * i + 3] = rgb
    return bytes(pixels)


def draw_scene(kind: Kind, rng: random.Random, corner: int, answer: int) -> Scene:
    """Four quadrants holding the four options in a random order, option ``answer`` at
    ``corner``; the other attribute (shape or colour) drawn at random."""
    rest = [i for i in range(len(kind.options)) if i != answer]
    rng.shuffle(rest)
    order = [*rest[:corner], answer, *rest[corner:]]
    asked = [kind.options[i] for i in order]
    other = [rng.choice(kind.nuisance) for _ in range(4)]
    if kind.name == "DemoMCQ":
        return tuple(zip(other, asked, strict=False))
    return tuple(zip(asked, other, strict=False))


def dataset_items(kind: Kind, n_rows: int = 24) -> list[tuple[Scene, int, int]]:
    """(scene, asked corner, answer index) per row: letters and corners 6 rows each."""
    rng = random.Random(f"{DEMO_DATA_SEED}:{kind.name}")
    answers = [i % 4 for i in range(n_rows)]
    corners = [i % 4 for i in range(n_rows)]
    rng.shuffle(answers)
    rng.shuffle(corners)
    return [(draw_scene(kind, rng, c, a), c, a) for c, a in zip(corners, answers, strict=False)]
