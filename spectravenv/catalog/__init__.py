"""What exists: envs, models, benchmarks and add-ons (entries), read from the shipped TOML
and users' spectravenv.toml (loader)."""
