"""Ray Tune sweeps of token-clustering schedules: ``python sweeps/sweep.py CONFIG.yaml``."""
