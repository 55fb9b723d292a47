"""The VLMEvalKit import guard (runners/vlmeval_guard.py) in a real env: a wrapper module that
cannot import becomes a placeholder whose error names the env, read from the facts spectravenv
writes beside the guard when it builds the env (one writer, envs/venv.py; one reader, the guard)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .conftest import Workspace


def fake_vlmeval(root: Path) -> Path:
    """A vlmeval package whose one wrapper module fails to import, as one written for another
    transformers release does."""
    pkg = root / "vlmeval"
    (pkg / "vlm").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "vlm" / "__init__.py").write_text("")
    (pkg / "vlm" / "thyme.py").write_text(
        "import transformers\nfrom transformers import NoSuchModelClass  # absent from every release\n"
    )
    return root


def test_a_placeholder_names_the_env_it_was_built_in(ws: Workspace, tmp_path: Path):
    ws.run("sync", "tiny", check=True, timeout=900)
    [env] = sorted((ws.home / "envs").glob("tiny-*"))
    code = ("import vlmeval.vlm.thyme as m\n"
            "try:\n    m.Thyme()\nexcept ImportError as e:\n    print(e)\n")  # fmt: skip
    proc = subprocess.run([env / "bin" / "python", "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(fake_vlmeval(tmp_path / "src"))}, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    message = proc.stdout.strip()
    assert message.startswith(
        "Thyme is unavailable in spectravenv env tiny (transformers 4.37.2): importing "
        "vlmeval.vlm.thyme failed with"
    ), message
    assert "NoSuchModelClass" in message
