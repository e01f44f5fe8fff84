"""One training run: the pipeline that builds it, the Trainer's callbacks, checkpoints and resume,
the run directory, loggers and the distributed setup."""
