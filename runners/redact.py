"""Copy stdin to stdout with the values of secret variables masked (stdlib only).

Used inside Slurm jobs, where the runner's output goes to a Slurm log file rather than through
the dispatcher: `runner ... 2>&1 | python redact.py`. The secrets' names come in
SPECTRAVENV_SECRET_NAMES; their values are in this process's environment.
"""

import os
import sys


def main() -> None:
    names = [n for n in os.environ.get("SPECTRAVENV_SECRET_NAMES", "").split(",") if n]
    values = sorted((os.environ.get(n, "") for n in names), key=len, reverse=True)
    values = [v for v in values if len(v) >= 4]  # masking "1" would shred ordinary text
    for raw in iter(sys.stdin.buffer.readline, b""):
        line = raw.decode("utf-8", "replace")
        for v in values:
            line = line.replace(v, "***")
        sys.stdout.write(line)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
