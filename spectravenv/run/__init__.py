"""Running a plan: the run folder (rundir), the runners' events (events), job files (jobfile),
the work left (work), the local and Slurm launchers, live progress, and `eval`'s steps (evaluate)."""
