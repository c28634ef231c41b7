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
# Many processes (jaxsparse.distributed.initialize; also from the
# environment: JAXSPARSE_COORDINATOR_ADDRESS, _NUM_PROCESSES, _PROCESS_ID).
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 "
                    "in a multi-process run.")
flags.DEFINE_integer("num_processes", None, "Processes in the run.")
flags.DEFINE_integer("process_id", None, "This process's index.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() "
                  "with no arguments (Cloud TPU pods, SLURM).")
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


def _seed_results(config, workdir: str) -> None:
  """With `config.seeds`: mean ± std over seeds beside the per-run table
  (also after a shortfall error: results.json is written before it)."""
  if not config.get("seeds", ()):
    return
  if not os.path.exists(os.path.join(workdir, "results.json")):
    return
  from jaxsparse.experiments import plotting  # pylint: disable=g-import-not-at-top
  table, paths = plotting.write_seed_results(workdir)
  print(table)
  print("seed plots: " + ", ".join(paths))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO.
  debug = FLAGS.debug or os.environ.get("JAXSPARSE_DEBUG", "") not in (
      "", "0")
  import jax  # pylint: disable=g-import-not-at-top

  from jaxsparse.experiments import config as config_lib  # pylint: disable=g-import-not-at-top
  try:
    from jaxsparse import distributed  # pylint: disable=g-import-not-at-top
    try:
      distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                             FLAGS.process_id, auto=FLAGS.distributed)
    except ValueError as e:
      raise errors.ConfigError(str(e)) from e
    if FLAGS.dry_run:
      print(config_lib.validate(FLAGS.config))
      return
    if not FLAGS.workdir:
      raise errors.ConfigError("--workdir is required (where metrics, plots "
                               "and checkpoints go).")
    if FLAGS.config.get("study", "none") == "scaling":  # experiments/study.py
      from jaxsparse.experiments import study  # pylint: disable=g-import-not-at-top
      study.scaling_study(FLAGS.config, FLAGS.workdir, progress=FLAGS.progress)
      return
    from jaxsparse.experiments import train  # pylint: disable=g-import-not-at-top
    cache = jax.config.jax_compilation_cache_dir
    if FLAGS.config.get("seeds", ()) and not cache:
      # Seed repeats compile the same programs: reuse them across runs.
      jax.config.update("jax_compilation_cache_dir",
                        os.path.join(FLAGS.workdir, "jax_cache"))
      # Most programs here compile in under JAX's default 1 s floor.
      jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    try:
      train.run_experiment(FLAGS.config, FLAGS.workdir,
                           progress=FLAGS.progress)
    except errors.ShortfallError:
      _seed_results(FLAGS.config, FLAGS.workdir)
      raise
    _seed_results(FLAGS.config, FLAGS.workdir)
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
