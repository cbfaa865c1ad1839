"""Training of LIIF models: config, data, distributed setup, loop, checkpoints (see train_liif.py)."""
