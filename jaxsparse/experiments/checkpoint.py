"""Orbax checkpoints of the whole training state (params, optimizer, masks)."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxsparse.experiments.errors import CheckpointError

__all__ = ("CheckpointError", "Checkpointer")


class Checkpointer:
  """Saves and restores a training-state pytree in `<workdir>/checkpoints`.

  A run directory remembers the config it was started with; resuming it
  with a different config is refused, so a good checkpoint is never
  overwritten by an unrelated run.
  """

  def __init__(self, workdir: str, config_json: str, *, every: int,
               max_to_keep: int = 3):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self.every = every
    os.makedirs(workdir, exist_ok=True)
    cfg_path = os.path.join(workdir, "config.json")
    if os.path.exists(cfg_path) and os.path.isdir(self.directory) and any(
        n.isdigit() for n in os.listdir(self.directory)):
      with open(cfg_path) as f:
        old = f.read()
      if json.loads(old) != json.loads(config_json):
        raise CheckpointError(
            f"workdir {workdir!r} holds checkpoints of a run with a different "
            f"config ({cfg_path}); use a new --workdir or delete it.")
    if jax.process_index() == 0:
      with open(cfg_path, "w") as f:
        f.write(config_json)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True,
            enable_async_checkpointing=False))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, force: bool = False) -> None:
    if force or (self.every > 0 and step % self.every == 0):
      if self.manager.latest_step() == step:
        return
      self.manager.save(step, args=ocp.args.StandardSave(state), force=force)

  def restore(self, state_like: Any) -> tuple[int, Any] | None:
    """Restores the latest checkpoint into the structure of `state_like`."""
    step = self.manager.latest_step()
    if step is None:
      return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_like)
    try:
      restored = self.manager.restore(
          step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # orbax raises many types; report one clearly.
      raise CheckpointError(
          f"cannot restore checkpoint step {step} from {self.directory}: it "
          f"is corrupt or does not match this model/optimizer "
          f"({type(e).__name__}: {str(e)[:300]}). Use a new --workdir, or "
          f"delete {os.path.join(self.directory, str(step))} to fall back to "
          f"an older checkpoint.") from e
    mismatch = [
        (a.shape, b.shape) for a, b in zip(
            jax.tree.leaves(restored), jax.tree.leaves(state_like),
            strict=False)
        if a.shape != b.shape or a.dtype != b.dtype]
    if (jax.tree.structure(restored) != jax.tree.structure(state_like)
        or mismatch):
      raise CheckpointError(
          f"checkpoint step {step} in {self.directory} does not match the "
          f"current training state: {mismatch[:3]}")
    return step, restored

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def read(workdir: str, step: int) -> Any:
  """The training state saved at `step` in a run directory, on this
  process's first device, whatever mesh or processes wrote it."""
  path = os.path.join(os.path.abspath(workdir), "checkpoints", str(step),
                      "default")
  ck = ocp.StandardCheckpointer()
  meta = ck.metadata(path)
  tree = getattr(meta, "item_metadata", None)
  tree = meta if tree is None else tree.tree
  dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return ck.restore(path, jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=dev), tree))
