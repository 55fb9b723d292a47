"""Where a model runs: hash-locked venvs built with uv (locks, pythons, uv, venv), their
add-ons, wheelhouses for machines without an index, and selftest of each env's families."""
