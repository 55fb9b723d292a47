"""Run in a torch env's Python (cv2, pandas, pyarrow, decord): a tiny Video-MME snapshot, in the
layout of the hub's `lmms-lab/Video-MME` dataset repo that `VideoMME.prepare_dataset` reads:
`videos_chunked_01.zip` (the mp4 files), `subtitle.zip`, `videomme/test-00000-of-00001.parquet`.

argv: spec.json out_dir. The spec holds per video its id and frames (row-major RGB8, base64, all
of one size) and per question its row of the parquet. Every video is read back with decord (what
VideoMME.save_video_frames uses), so a file decord cannot read fails here, not in the run.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import zipfile

import cv2
import decord
import numpy as np
import pandas as pd

FPS = 8


def write_video(path: str, frames: list[np.ndarray]) -> None:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), FPS, (w, h))
    assert writer.isOpened(), f"cv2 cannot write {path}"
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    assert len(decord.VideoReader(path)) == len(frames), (
        f"decord reads another frame count from {path}"
    )


def main(spec_file: str, out: str) -> None:
    with open(spec_file) as fh:
        spec = json.load(fh)
    size = int(spec["size"])
    work = out.rstrip("/") + "-work"  # the mp4 files before they are zipped
    os.makedirs(work, exist_ok=True)
    os.makedirs(os.path.join(out, "videomme"), exist_ok=True)
    with zipfile.ZipFile(os.path.join(out, "videos_chunked_01.zip"), "w") as zf:
        for video in spec["videos"]:
            frames = [
                np.frombuffer(base64.b64decode(f), np.uint8).reshape(size, size, 3)
                for f in video["frames"]
            ]
            path = os.path.join(work, f"{video['id']}.mp4")
            write_video(path, frames)
            zf.write(path, f"data/{video['id']}.mp4")
    with zipfile.ZipFile(os.path.join(out, "subtitle.zip"), "w") as zf:
        for video in spec["videos"]:
            zf.writestr(
                f"subtitle/{video['id']}.srt", "1\n00:00:00,000 --> 00:00:01,000\n(no speech)\n"
            )
    rows = pd.DataFrame(spec["questions"])
    rows.to_parquet(os.path.join(out, "videomme", "test-00000-of-00001.parquet"), index=False)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
