"""The runner's activation-density recording (`config.activations`).

With `config.activations.record_every = N > 0`, every N steps (at an
evaluation step; and at the last step) the image runner measures the
per-layer activation density of the current model on up to `MAX_IMAGES`
test images (`jaxsparse.activations.measure_density`: fraction of non-zero
inputs of each linear layer), stores them in `activation_density.json`
and the run's result (`result["activation_density"]`), and plots them
across training in `activation_density.png`. A resumed run records from
where it resumed.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections
import numpy as np
from flax import nnx

from jaxsparse import activations

MAX_IMAGES = 512
BATCH = 256


def record_every(config: ml_collections.ConfigDict) -> int:
  """`config.activations.record_every`, 0 (off) if the key is absent."""
  a = config.get("activations", None)
  return int(a.get("record_every", 0)) if a is not None else 0


class Recorder:
  """Collects per-layer densities during one run; writes them at the end."""

  def __init__(self, config: ml_collections.ConfigDict, graphdef: Any,
               workdir: str):
    self.every = record_every(config)
    self.graphdef = graphdef
    self.workdir = workdir
    self.history: list[dict[str, Any]] = []

  def maybe_record(self, step: int, total: int, params: Any, rest: Any,
                   images: np.ndarray) -> None:
    """Records at multiples of `every` and at the last step."""
    if not self.every or (step % self.every and step != total):
      return
    model = nnx.merge(self.graphdef, params, rest)
    model.eval()
    x = np.asarray(images[:MAX_IMAGES])
    batches = [x[i:i + BATCH] for i in range(0, len(x), BATCH)]
    dens = activations.measure_density(model, batches)
    self.history.append({"step": int(step), "density": {
        k: v.nonzero for k, v in dens.items()}})

  def finish(self) -> list[dict[str, Any]]:
    """Writes the JSON and the plot (if anything was recorded)."""
    if not self.history:
      return []
    with open(os.path.join(self.workdir, "activation_density.json"),
              "w") as f:
      json.dump(self.history, f, indent=1)
    plot(self.history, os.path.join(self.workdir, "activation_density.png"))
    return self.history


def plot(history: list[dict[str, Any]], path: str) -> str:
  """Per-layer activation density (fraction non-zero) against step."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 3.8))
  steps = [h["step"] for h in history]
  for name in history[-1]["density"]:
    ax.plot(steps, [h["density"].get(name, np.nan) for h in history], "o-",
            label=name, ms=3)
  ax.set(xlabel="step", ylabel="fraction of non-zero inputs",
         title="activation density per layer", ylim=(-0.02, 1.02))
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
