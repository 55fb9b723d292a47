"""The built-in demo datasets and their controls, as VLMEvalKit TSVs (standard library only).

``DemoMCQ`` (what colour is the shape in the <corner> corner?) and ``DemoShapes`` (which shape is
in the <corner> corner?), 24 rows each; answers and asked corners are balanced (6 rows per
letter), so a model without the image or without the question scores 25 on average. Written to
``<LMUData>/<name>.tsv`` they take VLMEvalKit's own custom-MCQ path (``build_dataset`` of an
unknown name -> ``CustomMCQDataset``): no md5 check, no download. Controls, the same rows with one
part of the input destroyed: ``<Dataset>_Blank`` (every image empty), ``<Dataset>_Shuffled``
(images rotated across rows, so no row keeps its own) and ``<Dataset>_NoQuestion`` (a question
that does not say which corner).
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import shutil
from collections.abc import Callable
from typing import Any

from ..files import write_atomic
from .png import png_bytes
from .scenes import (
    CORNERS,
    DEMO_DATA_SEED,
    IMG_SIZE,
    KINDS,
    OPTION_LETTERS,
    Kind,
    dataset_items,
    render_scene_rgb,
)

CONTROLS = ("Blank", "Shuffled", "NoQuestion")
COLUMNS = ["index", "image", "question", "A", "B", "C", "D", "answer", "category"]
# sha256 of the built-in TSVs of earlier releases (the untrained demo's one-shape images)
SUPERSEDED_SHA256: dict[str, tuple[str, ...]] = {
    "DemoMCQ": ("bf83d0209fe202d40ce9aeb0d7921b72946ad63ce870693fda42502b72676e3c",),
    "DemoShapes": ("4a466a4d01f142c29f1449e5a3eb80a3e5243519a7c09dfa7fa293116557b108",),
}


def _scenes_for(kind: Kind, items: list, control: str | None) -> list:
    scenes = [scene for scene, _, _ in items]
    if control == "Blank":
        return [() for _ in scenes]
    if control == "Shuffled":
        # a rotation by a seeded offset: every row gets another row's image
        shift = random.Random(f"{DEMO_DATA_SEED}:{kind.name}:shuffle").randrange(1, len(scenes))
        return scenes[shift:] + scenes[:shift]
    return scenes


def _mcq_rows(kind: Kind, control: str | None = None) -> list[dict[str, Any]]:
    items = dataset_items(kind)
    rows = []
    for i, ((_, corner, answer), scene) in enumerate(zip(items, _scenes_for(kind, items, control), strict=False)):
        question = kind.generic if control == "NoQuestion" else kind.question.format(corner=CORNERS[corner])
        image = base64.b64encode(png_bytes(IMG_SIZE, IMG_SIZE, render_scene_rgb(scene))).decode("ascii")
        row = dict(index=i, image=image, question=question)
        row.update(zip(OPTION_LETTERS, kind.options, strict=False))
        row.update(answer=OPTION_LETTERS[answer], category=kind.category[kind.options[answer]])
        rows.append(row)
    return rows


def _tsv_bytes(rows: list[dict[str, Any]]) -> bytes:
    lines = ["\t".join(COLUMNS)] + ["\t".join(str(row[c]) for c in COLUMNS) for row in rows]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _dataset_factory(kind: Kind, control: str | None) -> Callable[[], bytes]:
    return lambda: _tsv_bytes(_mcq_rows(kind, control))


BUILTIN_DATASETS: dict[str, Callable[[], bytes]] = {
    **{name: _dataset_factory(kind, None) for name, kind in KINDS.items()},
    **{f"{name}_{c}": _dataset_factory(kind, c) for name, kind in KINDS.items() for c in CONTROLS},
}


def builtin_dataset_bytes(builtin: str) -> bytes:
    if builtin not in BUILTIN_DATASETS:
        raise KeyError(f"unknown built-in dataset {builtin!r}; known: {sorted(BUILTIN_DATASETS)}")
    return BUILTIN_DATASETS[builtin]()


def ensure_builtin_dataset(builtin: str, data_root: str, name: str | None = None) -> str:
    """Place the built-in TSV at ``<data_root>/<name>.tsv`` (name defaults to builtin).

    Written only if missing.  An existing file with other content is an error rather than
    being overwritten: VLMEvalKit caches decoded images under LMUData/images/<name>/, so
    silently swapping the TSV would mix old images with new questions.
    """
    name = name or builtin
    path = os.path.join(data_root, f"{name}.tsv")
    want = builtin_dataset_bytes(builtin)
    if not os.path.exists(path):
        write_atomic(path, want)
        return path
    with open(path, "rb") as fh:
        have = fh.read()
    if hashlib.sha256(have).hexdigest() in SUPERSEDED_SHA256.get(builtin, ()):
        # an earlier release's built-in file: ours to replace, with the images VLMEvalKit
        # decoded from it (it reuses LMUData/images/<name>/<index>.png when present)
        shutil.rmtree(os.path.join(data_root, "images", name), ignore_errors=True)
        write_atomic(path, want)
    elif have != want:
        raise RuntimeError(
            f"{path} exists but differs from built-in dataset {builtin!r} "
            f"(sha256 {hashlib.sha256(have).hexdigest()[:12]} != {hashlib.sha256(want).hexdigest()[:12]}); "
            "remove it or use another benchmark name"
        )
    return path
