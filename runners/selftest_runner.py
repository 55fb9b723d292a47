#!/usr/bin/env python
"""spectravenv's selftest inside an env, started by path under the env's Python:

    <env>/bin/python runners/selftest_runner.py SPEC.json

See svrunner/selftest.py; this folder is sys.path[0], so the svrunner package beside it imports.
"""

import sys

from svrunner.selftest import main

if __name__ == "__main__":
    sys.exit(main(sys.argv))
