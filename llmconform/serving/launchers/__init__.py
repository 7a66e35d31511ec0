"""Where engine processes run: local, docker, slurm. (A server started elsewhere is attached to with --llm-url.)"""
