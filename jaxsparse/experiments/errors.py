"""User-facing errors of the runner: one paragraph, one exit code each.

`main` prints a `UserError` as its message alone (no traceback unless
`--debug` or `JAXSPARSE_DEBUG=1`) and exits with its `exit_code`.
"""

from __future__ import annotations


class UserError(Exception):
  """An error the user can fix (config, data, checkpoint); no traceback."""

  exit_code = 1


class ConfigError(UserError, ValueError):
  """The config cannot run as written; raised before any training."""

  exit_code = 2


class DataError(UserError, RuntimeError):
  """A dataset is missing or unreadable."""

  exit_code = 3


class CheckpointError(UserError, RuntimeError):
  """A checkpoint that cannot be restored into the current run."""

  exit_code = 4


class ShortfallError(UserError, RuntimeError):
  """A run delivered another sparsity than the one asked for."""

  exit_code = 5


INTERRUPT_EXIT_CODE = 130  # Ctrl-C, as shells report SIGINT.
