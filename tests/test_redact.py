"""Masking of secrets (svrunner.redact, shared by host, runner and Slurm log filter) and .env
parsing: whole values, values split over lines or over writes, JSON, short values, sealing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from svrunner import redact
from svrunner.protocol import EventLog, read_events

from spectravenv import secrets
from spectravenv.errors import SpectravenvError

from .conftest import REPO
from .test_envs import one_line_error

TOKEN = "hf_SECRETtoken0123456789abcdef"


def test_a_value_is_masked_whole_and_split_over_lines():
    r = redact.Redactor([TOKEN])
    assert r.text(f"token={TOKEN}!") == "token=***!"
    split = f"a {TOKEN[:10]}\n{TOKEN[10:]} b"
    assert r.text(split) == "a ***\n*** b"  # the line break stays, both halves are masked
    assert TOKEN[:10] not in r.text(split) and TOKEN[10:] not in r.text(split)
    assert r.text("nothing here") == "nothing here"


def test_a_stream_cut_anywhere_never_lets_a_piece_through():
    r = redact.Redactor([TOKEN, "sk-other-key-42424242"])
    text = f"start {TOKEN} middle sk-other-key-42424242 and {TOKEN[:7]}\n{TOKEN[7:]} end\n"
    for size in (1, 2, 3, 5, 7, 13, 64):
        stream = r.stream()
        out = "".join(stream.feed(text[i : i + size]) for i in range(0, len(text), size)) + stream.flush()
        assert out == r.text(text), size
        assert TOKEN[:7] not in out and "42424242" not in out


def test_a_held_back_tail_that_is_no_secret_comes_out_unchanged():
    stream = redact.Redactor([TOKEN]).stream()
    assert stream.feed("ends with h") == "ends with "  # 'h' could start the token
    assert stream.feed("ello\n") == "hello\n"
    assert stream.feed("hf_SEC") == ""
    assert stream.flush() == "hf_SEC"  # at the end a partial match is ordinary text


def test_short_values_are_not_masked_and_credentials_among_them_are_named():
    r = redact.Redactor(["1", "abc", TOKEN])
    assert r.text("1 abc") == "1 abc"
    names = redact.short_secret_names({"HF_HUB_OFFLINE": "1", "OPENAI_API_KEY": "sk-12", "HF_TOKEN": TOKEN})
    assert names == ["OPENAI_API_KEY"]


def test_objects_are_masked_keys_and_all_and_sealed_values_come_back():
    r = redact.Redactor([TOKEN])
    assert r.obj({TOKEN: [f"x{TOKEN}", 3, None]}) == {"***": ["x***", 3, None]}
    sealed = redact.seal({"kwargs": {"key": TOKEN, "path": f"/data/{TOKEN}/m"}}, {"HF_TOKEN": TOKEN})
    assert TOKEN not in json.dumps(sealed)
    assert redact.unseal(sealed, {"HF_TOKEN": TOKEN}) == {"kwargs": {"key": TOKEN, "path": f"/data/{TOKEN}/m"}}
    with pytest.raises(KeyError, match="HF_TOKEN"):
        redact.unseal(sealed, {})


def test_the_event_writer_masks_before_anything_reaches_the_disk(tmp_path):
    path = tmp_path / "events.jsonl"
    log = EventLog(str(path), "job", 0, redact.Redactor([TOKEN, 'quo"te\\back']))
    log.emit("job_failed", stage="model", error=f"bad key {TOKEN}", traceback=f"...\n{TOKEN[:9]}\n{TOKEN[9:]}",
             oom=False, kwargs={"k": 'quo"te\\back'})  # fmt: skip
    raw = path.read_bytes()
    assert TOKEN.encode() not in raw and TOKEN[9:].encode() not in raw and b"quo" not in raw
    [ev] = read_events(path)
    assert ev["error"] == "bad key ***"


def test_the_slurm_log_filter_masks_what_passes_through_it():
    env = {"SPECTRAVENV_SECRET_NAMES": "HF_TOKEN", "HF_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"}
    data = f"line {TOKEN}\npart {TOKEN[:5]}".encode() + f"{TOKEN[5:]} end\nübung\n".encode()
    proc = subprocess.run([sys.executable, str(REPO / "runners" / "svrunner" / "redact.py")],
                          input=data, capture_output=True, env=env, timeout=30, check=True)  # fmt: skip
    assert proc.stdout.decode() == "line ***\npart *** end\nübung\n"


def test_dotenv_is_parsed_as_python_dotenv_parses_it(tmp_path):
    f = tmp_path / ".env"
    f.write_text(
        f'# keys\nHF_TOKEN="{TOKEN}" # the hub\nexport OPENAI_API_KEY=\'sk-abc def\'\n'
        "PLAIN=value # comment\nMULTI=\"one\ntwo\"\nNOVALUE\nEMPTY=\n"
    )
    s = secrets.load(f, required=True)
    assert s.values == {"HF_TOKEN": TOKEN, "OPENAI_API_KEY": "sk-abc def", "PLAIN": "value",
                        "MULTI": "one\ntwo", "EMPTY": ""}  # fmt: skip
    assert s.redact(f'"{TOKEN}"') == '"***"'


def test_a_malformed_dotenv_line_is_an_error_naming_file_and_line_never_the_value(tmp_path):
    f = tmp_path / ".env"
    f.write_text(f'PLAIN=1\n# a comment\nexport HF_TOKEN="{TOKEN}\nOTHER=2\n')  # unclosed quote
    with pytest.raises(SpectravenvError) as e:
        secrets.load(f, required=True)
    msg = str(e.value)
    assert msg.startswith(f"{f}, line 3: python-dotenv cannot parse the statement setting HF_TOKEN")
    assert "KEY=VALUE" in msg and TOKEN not in msg and "\n" not in msg
    f.write_text("GOOD=1\nmy key=value\n")  # a space in a name: no name to show
    with pytest.raises(SpectravenvError, match=r", line 2: python-dotenv cannot parse a statement;"):
        secrets.load(f, required=True)


def test_the_cli_refuses_a_malformed_dotenv_before_doing_anything(ws):
    (ws.cwd / ".env").write_text(f"HF_TOKEN='{TOKEN}\n")
    proc = ws.run("prefetch", "demo-tiny-llava")
    msg = one_line_error(proc)
    assert ".env, line 1: python-dotenv cannot parse the statement setting HF_TOKEN" in msg
    assert TOKEN not in proc.stdout + proc.stderr and "built in" not in proc.stderr


# Secrets that overlap in every way that matters: one extends another, one ends where another
# begins, one sits inside another, one repeats a character run.
FAMILIES = [
    ["token123", "token1239baa"],  # a secret that extends another
    ["abcdefgh", "defghijk"],  # the end of one is the start of the other
    ["abcdefghij", "cdefghij"],  # one inside another, ending together
    ["aaaaaaaa", "aaaaaaaab"],  # runs: every position could start one
    ["xyzxyzxy", "zxyzxyzq", "xyzq0000"],
]


def texts_of(secrets: list[str]) -> list[str]:
    """Texts made of the secrets' pieces: whole, cut short, glued together, split by a line break."""
    out = []
    for a in secrets:
        for b in secrets:
            out += [f"{a}{b}", f"-{a[:5]}{b}-", f"{a[:-1]}\n{a[-1]}{b[3:]}", f"{a}{a[:6]}", f"{b}\n\r{a}"]
    return out


def splits(text: str):
    """Every way of cutting `text` into at most three pieces, and into single characters."""
    n = len(text)
    yield [text]
    yield list(text)
    for i in range(1, n):
        yield [text[:i], text[i:]]
        for j in range(i + 1, n):
            yield [text[:i], text[i:j], text[j:]]


@pytest.mark.parametrize("secrets", FAMILIES, ids=lambda s: s[0])
def test_the_stream_gives_exactly_the_masking_of_the_whole_text_wherever_it_is_cut(secrets):
    r = redact.Redactor(secrets)
    for text in texts_of(secrets):
        whole = r.text(text)
        for pieces in splits(text):
            stream = r.stream()
            out = "".join(stream.feed(p) for p in pieces) + stream.flush()
            assert out == whole, (text, pieces)
