"""Experiment runner.

    python -m jaxsparse.experiments.main --config configs/default.py \\
        --workdir runs/demo --config.pruning.sparsity=0.95

`--dry_run` checks the config and prints the plan (runs, steps, per-layer
target sparsity) without training. User errors (config, data, checkpoint,
a shortfall of the delivered sparsity, Ctrl-C) print one paragraph and exit
with their own code (`errors.py`: 2 config, 3 data, 4 checkpoint,
5 shortfall, 130 interrupt); `--debug` or `JAXSPARSE_DEBUG=1` adds the
traceback.
"""

from __future__ import annotations

import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from jaxsparse.experiments import errors

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for metrics, plots and "
                    "checkpoints; an interrupted run there is resumed.")
flags.DEFINE_bool("progress", True, "Show a progress bar (on a terminal).")
flags.DEFINE_bool("dry_run", False, "Check the config, print the plan, exit.")
flags.DEFINE_bool("debug", False, "Print tracebacks of user errors too.")
config_flags.DEFINE_config_file(
    "config", None, "Path to an ml-collections config file.",
    lock_config=True)
flags.mark_flags_as_required(["config"])


def _fail(message: str, code: int) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(code)


def _callback_error(e: Exception) -> str | None:
  """The original exception of a host callback wrapped by XLA, if any."""
  found = re.findall(r"^(\w+(?:Error|Exception)): (.+)$", str(e), re.M)
  return f"{found[-1][0]}: {found[-1][1]}" if found else None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO.
  debug = FLAGS.debug or os.environ.get("JAXSPARSE_DEBUG", "") not in (
      "", "0")
  import jax  # pylint: disable=g-import-not-at-top

  from jaxsparse.experiments import config as config_lib  # pylint: disable=g-import-not-at-top
  try:
    if FLAGS.dry_run:
      print(config_lib.validate(FLAGS.config))
      return
    if not FLAGS.workdir:
      raise errors.ConfigError("--workdir is required (where metrics, plots "
                               "and checkpoints go).")
    from jaxsparse.experiments import train  # pylint: disable=g-import-not-at-top
    train.run_experiment(FLAGS.config, FLAGS.workdir, progress=FLAGS.progress)
  except errors.UserError as e:
    if debug:
      raise
    _fail(str(e), e.exit_code)
  except KeyboardInterrupt:
    if debug:
      raise
    _fail("interrupted; run the same command again to resume from the last "
          "checkpoint.", errors.INTERRUPT_EXIT_CODE)
  except jax.errors.JaxRuntimeError as e:
    original = _callback_error(e)
    if debug or original is None:
      raise
    _fail(original, 1)


if __name__ == "__main__":
  app.run(main)
