"""Experiment runner.

    python -m jaxsparse.experiments.main --config configs/default.py \
        --workdir runs/demo \
        --config.pruning.sparsity=0.95
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for metrics, plots and "
                    "checkpoints; an interrupted run there is resumed.")
flags.DEFINE_bool("progress", True, "Show a progress bar.")
config_flags.DEFINE_config_file(
    "config", None, "Path to an ml-collections config file.",
    lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO.
  from jaxsparse.experiments import train  # pylint: disable=g-import-not-at-top
  train.run_experiment(FLAGS.config, FLAGS.workdir, progress=FLAGS.progress)


if __name__ == "__main__":
  app.run(main)
