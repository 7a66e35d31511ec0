"""Where engine processes run: local, slurm. (A server started elsewhere is attached to with --llm-url.)"""
