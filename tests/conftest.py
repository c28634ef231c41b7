"""Shared test setup: 8 virtual CPU devices (must be set before JAX starts)."""

import getpass
import os
import tempfile

if "XLA_FLAGS" not in os.environ:
  # LLVM at -O0: most of the suite's time is compiling small programs; the
  # results are the same (HLO passes and float semantics do not change),
  # only the generated loops are slower, which tests do not measure.
  os.environ["XLA_FLAGS"] = ("--xla_force_host_platform_device_count=8 "
                             "--xla_backend_optimization_level=0")

# Many tests compile the same programs (the same small models and steps,
# in-process and in the runner's subprocesses): one persistent compilation
# cache for the suite's processes. Its keys hold the program, the flags and
# the jax version, so a stale entry is never used.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), f"jaxsparse-test-cache-{getpass.getuser()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
