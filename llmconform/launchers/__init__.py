"""Where engine processes run: local, slurm, external."""
