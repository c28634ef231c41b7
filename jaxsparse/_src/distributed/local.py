"""Several JAX processes on this machine, for tests and CPU studies.

`launch` starts a command once per process with the `jax.distributed`
environment that `jaxsparse.distributed.initialize` reads (a free
localhost port, the process count and index) and
`--xla_force_host_platform_device_count` virtual CPU devices each, so a
multi-host run can be exercised on one CPU machine (CPU collectives).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import tempfile
from collections.abc import Sequence

from jaxsparse._src.distributed import runtime


@dataclasses.dataclass
class Process:
  """A started process; `wait` returns its exit code and output."""

  popen: subprocess.Popen
  log: object

  def wait(self, timeout: float | None = None) -> tuple[int, str]:
    try:
      rc = self.popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      self.popen.kill()
      self.popen.wait()
      rc = -9
    self.log.seek(0)
    out = self.log.read()
    self.log.close()
    return rc, out


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start(cmd: Sequence[str], *, devices: int = 1, env: dict | None = None,
          cwd: str | None = None) -> Process:
  """Starts `cmd` on CPU with `devices` virtual devices (the environment's
  other XLA flags kept); output goes to a temporary file (a full pipe would
  block the process)."""
  e = dict(os.environ if env is None else env)
  e["JAX_PLATFORMS"] = "cpu"
  # The device count replaces the caller's; its other XLA flags are kept.
  kept = [f for f in e.get("XLA_FLAGS", "").split()
          if not f.startswith("--xla_force_host_platform_device_count")]
  e["XLA_FLAGS"] = " ".join(
      kept + [f"--xla_force_host_platform_device_count={devices}"])
  log = tempfile.TemporaryFile("w+")
  return Process(subprocess.Popen(list(cmd), cwd=cwd, env=e, stdout=log,
                                  stderr=subprocess.STDOUT, text=True), log)


def launch(cmd: Sequence[str], num_processes: int, *,
           devices_per_process: int = 1, cwd: str | None = None,
           env: dict | None = None) -> list[Process]:
  """Starts `num_processes` copies of `cmd` as one `jax.distributed` run."""
  port = free_port()
  procs = []
  for i in range(num_processes):
    e = dict(os.environ if env is None else env)
    e[runtime.ENV_ADDRESS] = f"127.0.0.1:{port}"
    e[runtime.ENV_NUM] = str(num_processes)
    e[runtime.ENV_ID] = str(i)
    procs.append(start(cmd, devices=devices_per_process, env=e, cwd=cwd))
  return procs


def wait_all(procs: Sequence[Process], timeout: float) -> list[str]:
  """Waits for every process; raises with the output of a failed one (all
  are killed if one fails or the time runs out)."""
  outs, failed = [], None
  for p in procs:
    rc, out = p.wait(timeout)
    outs.append(out)
    if rc != 0 and failed is None:
      failed = (rc, out)
      for q in procs:
        if q.popen.poll() is None:
          q.popen.kill()
  if failed is not None:
    raise RuntimeError(f"a process exited with {failed[0]}:\n"
                       f"{failed[1][-3000:]}")
  return outs
