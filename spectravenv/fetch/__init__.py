"""What a run downloads before it starts: benchmarks' TSVs and models' checkpoints (prefetch),
checked on disk for offline nodes (offline)."""
