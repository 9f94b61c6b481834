"""The one training loop and what surrounds it: state, optimizer, checkpoints, parallelism, resume, signals, lock."""
