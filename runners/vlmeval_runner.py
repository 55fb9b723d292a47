#!/usr/bin/env python
"""spectravenv's VLMEvalKit runner, started by path under an env's Python (or torchrun).

    <env>/bin/python runners/vlmeval_runner.py JOB_JSON

Everything lives in the `svrunner` package beside this file (stdlib only; this folder is
sys.path[0] when the script is started by path), so the host imports the very same protocol,
redaction and subset code that runs here.
"""

import sys

from svrunner.main import main

if __name__ == "__main__":
    sys.exit(main(sys.argv))
