"""What to run and where: GPUs (gpus), the matrix as jobs of work units (jobs), which worker
starts on which GPUs (schedule), and the measured speeds that size it all (stats)."""
