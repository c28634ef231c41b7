"""Shared test setup: 8 virtual CPU devices (must be set before JAX starts)."""

import os

if "XLA_FLAGS" not in os.environ:
  # LLVM at -O0: most of the suite's time is compiling small programs; the
  # results are the same (HLO passes and float semantics do not change),
  # only the generated loops are slower, which tests do not measure.
  os.environ["XLA_FLAGS"] = ("--xla_force_host_platform_device_count=8 "
                             "--xla_backend_optimization_level=0")
