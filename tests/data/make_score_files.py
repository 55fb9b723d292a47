"""Make real VLMEvalKit score files from tiny synthetic datasets (run inside an env's Python).

    python make_score_files.py SPEC.json OUT_DIR RUNNERS_DIR

SPEC.json maps an official VLMEvalKit dataset name to {"rows": [...], "predictions": {...}}:
the dataset's TSV rows (without images: a tiny PNG is added to every row) and the model's answer
for each row index. For each entry this script does what `spectravenv eval` does for that name,
minus the download and the model:

* the dataset object is the class VLMEvalKit's `build_dataset` picks for the name (the first of
  DATASET_CLASSES whose supported_datasets() has it), built by its own __init__; only its
  `load_data` is replaced, to read the local TSV instead of downloading the official one (the
  official loader would see an md5 mismatch on a local OCRBench.tsv/POPE.tsv/... and download);
* the prediction file is what `vlmeval.inference.infer_data_job` writes (dataset.data without the
  image column, plus `prediction`), at `get_pred_file_path(work_dir, model, dataset)`;
* `dataset.evaluate(pred_file, model=<judge>, nproc=..., verbose=False)` runs unchanged, inside
  the runner's own `circular_eval_guard` (MMBench's circular evaluation leaves a /tmp file).

OUT_DIR/manifest.json then lists, per name, the dataset class and every file evaluate() wrote.
"""

from __future__ import annotations

import base64
import io
import json
import os
import sys
import traceback

MODEL = "synthetic-model"  # the "{model}_{dataset}" stem VLMEvalKit names every file with



def tiny_png_b64() -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def snapshot(folder: str) -> dict[str, tuple[float, int]]:
    out = {}
    for f in os.listdir(folder):
        p = os.path.join(folder, f)
        if os.path.isfile(p):
            st = os.stat(p)
            out[p] = (st.st_mtime, st.st_size)
    return out


def jsonable(x):
    try:
        import pandas as pd

        if isinstance(x, pd.DataFrame):
            return json.loads(x.to_json(orient="records"))
    except ImportError:
        pass
    try:
        return json.loads(json.dumps(x, default=float))
    except (TypeError, ValueError):
        return repr(x)


def official_class(name: str):
    from vlmeval.dataset import DATASET_CLASSES

    for cls in DATASET_CLASSES:
        if name in cls.supported_datasets():
            return cls
    raise LookupError(f"{name} is not an official dataset of this VLMEvalKit")


def make_one(name: str, spec: dict, out_dir: str, guard, judge_kwargs: dict) -> dict:
    import pandas as pd
    from vlmeval.smp import dump, get_pred_file_path, load

    work_dir = os.path.join(out_dir, name)
    os.makedirs(work_dir, exist_ok=True)

    # the dataset TSV, as VLMEvalKit's TSVs are: one row per question, image as base64
    png = tiny_png_b64()
    rows = [{**r, "image": r.get("image", png)} for r in spec["rows"]]
    tsv = os.path.join(out_dir, "tsv", f"{name}.tsv")
    os.makedirs(os.path.dirname(tsv), exist_ok=True)
    pd.DataFrame(rows).to_csv(tsv, sep="\t", index=False)

    base = official_class(name)
    local = type(base.__name__, (base,), {"load_data": lambda self, dataset: load(tsv)})
    dataset = local(dataset=name)

    # the prediction file, as infer_data_job writes it
    preds = {str(k): v for k, v in spec["predictions"].items()}
    data = dataset.data.copy()
    missing = [x for x in data["index"] if str(x) not in preds]
    assert not missing, f"{name}: no prediction for {missing}"
    data["prediction"] = [str(preds[str(x)]) for x in data["index"]]
    if "image" in data:
        data.pop("image")
    pred_file = get_pred_file_path(work_dir, MODEL, name, use_env_format=True)
    dump(data, pred_file)

    before = snapshot(work_dir)
    with guard(name):
        ret = dataset.evaluate(pred_file, **judge_kwargs)
    after = snapshot(work_dir)
    written = sorted(p for p, m in after.items() if before.get(p) != m and p != pred_file)
    return {
        "class": f"{base.__module__}.{base.__qualname__}",
        "work_dir": work_dir,
        "model": MODEL,
        "prediction_file": pred_file,
        "written": written,
        "returned": jsonable(ret),
    }


def main(argv: list[str]) -> int:
    spec_path, out_dir, runners_dir = argv
    os.makedirs(out_dir, exist_ok=True)
    os.makedirs(os.environ.setdefault("LMUData", os.path.join(out_dir, "LMUData")), exist_ok=True)

    sys.path.insert(0, os.path.abspath(runners_dir))  # the runner's own package, svrunner
    from svrunner import kit

    judge = {**kit.JUDGE_DEFAULTS, "model": "exact_matching", "nproc": 1}  # as the runner passes

    with open(spec_path) as fh:
        specs = json.load(fh)
    manifest = {}
    for name, spec in specs.items():
        try:
            manifest[name] = make_one(name, spec, out_dir, kit.circular_eval_guard, judge)
        except Exception:  # one broken shape must not hide the others
            manifest[name] = {"error": traceback.format_exc()}
    with open(os.path.join(out_dir, "manifest.json"), "w") as fh:
        json.dump(manifest, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
