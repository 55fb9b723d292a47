"""How jobs start: locally as supervised subprocesses, or as Slurm jobs. Both start the same
runner with the same job file, so a job's outcome reads the same either way."""
