"""Masks sharded like their weights: placement, bit-identical mask updates
on a mesh, and the collectives that a mask update costs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxsparse
from jaxsparse import distributed as dist

pytestmark = pytest.mark.skipif(
    jax.device_count() < 8, reason="needs 8 (virtual) devices: conftest.py")


def _params(seed=0):
  k = jax.random.split(jax.random.PRNGKey(seed), 3)
  return {
      "l0": {"kernel": jax.random.normal(k[0], (96, 256)),
             "bias": jnp.zeros(256)},
      "l1": {"kernel": jax.random.normal(k[1], (256, 128)),
             "bias": jnp.zeros(128)},
      # 10 outputs: not divisible by 4 devices, so replicated.
      "l2": {"kernel": jax.random.normal(k[2], (128, 10)),
             "bias": jnp.zeros(10)},
  }


@pytest.fixture(scope="module")
def mesh():
  return dist.make_mesh(2, 4)


def test_make_mesh_shapes_and_errors():
  assert dict(dist.make_mesh().shape) == {"data": 8, "model": 1}
  assert dict(dist.make_mesh(model=4).shape) == {"data": 2, "model": 4}
  assert dict(dist.make_mesh(2, -1).shape) == {"data": 2, "model": 4}
  with pytest.raises(ValueError, match="mesh.model=3 does not divide"):
    dist.make_mesh(model=3)
  with pytest.raises(ValueError, match="mesh.data"):
    dist.make_mesh(0, 1)
  with pytest.raises(ValueError, match="2 \\* 2 = 4"):
    dist.make_mesh(2, 2)


def test_language_model_rules_are_megatron(mesh):
  cfg = jaxsparse.lm.tiny()
  model = nnx.eval_shape(lambda: jaxsparse.lm.Llama(cfg, rngs=nnx.Rngs(0)))
  specs = {}
  for path, x in jax.tree.flatten_with_path(
      nnx.state(model, nnx.Param))[0]:
    name = "/".join(str(getattr(k, "key", getattr(k, "name", k)))
                    for k in path)
    specs[name] = dist.param_spec(name, x.shape, mesh)
  layer = "layers/0/"
  for col in ("self_attn/q_proj", "self_attn/k_proj", "mlp/gate_proj",
              "mlp/up_proj"):
    assert specs[layer + col + "/kernel/value"] == P(None, "model")
  for row in ("self_attn/o_proj", "mlp/down_proj"):
    assert specs[layer + row + "/kernel/value"] == P("model")
  assert specs["embed_tokens/embedding/value"] == P("model")
  assert specs[layer + "input_layernorm/weight/value"] == P()


def test_indivisible_axes_stay_replicated(mesh):
  assert dist.param_spec("l2/kernel", (128, 10), mesh) == P()
  assert dist.param_spec("l1/kernel", (256, 128), mesh) == P(None, "model")
  fsdp = dist.param_spec("l1/kernel", (256, 128), mesh,
                         rules=(("in", "data"), ("out", "model")),
                         param_axes=((r"kernel$", ("in", "out")),))
  assert fsdp == P("data", "model")


def _sharded_state(tx, params, mesh):
  psh = dist.param_shardings(params, mesh)
  params = jax.device_put(params, psh)
  ssh = dist.like_params(jax.eval_shape(tx.init, params), params, psh)
  state = jax.jit(tx.init, out_shardings=ssh)(params)
  return params, psh, state, ssh


def test_masks_and_slots_follow_their_params(mesh):
  tx = jaxsparse.prune(0.9, optimizer=optax.adam(1e-3))
  params, psh, state, _ = _sharded_state(tx, _params(), mesh)
  kernel_spec = psh["l1"]["kernel"].spec
  assert kernel_spec == P(None, "model")
  assert state.masks["l1"]["kernel"].sharding.spec == kernel_spec
  assert state.mask_bits["l1"]["kernel"].sharding.spec == kernel_spec
  adam = state.inner_state[0]
  assert adam.mu["l1"]["kernel"].sharding.spec == kernel_spec
  assert adam.nu["l0"]["kernel"].sharding.spec == P(None, "model")
  assert state.count.sharding.spec == P()
  # Each device holds a quarter of the mask's columns.
  shard = state.masks["l1"]["kernel"].addressable_shards[0]
  assert shard.data.shape == (256, 32)


def _methods():
  adam = optax.adam(1e-3)
  s = jaxsparse.structures
  return {
      "layerwise": jaxsparse.prune(0.9, optimizer=adam),
      "global": jaxsparse.prune(
          0.9, allocation=jaxsparse.allocation.global_(), optimizer=adam),
      "erk": jaxsparse.prune(
          0.9, allocation=jaxsparse.allocation.erk(), optimizer=adam),
      "n_m": jaxsparse.prune(0.5, structure=s.n_m(2, 4), optimizer=adam),
      "block": jaxsparse.prune(0.75, structure=s.block(2, 2),
                               optimizer=adam),
      "rigl": jaxsparse.dst.rigl(0.9, update_every=1, end_step=100,
                                 optimizer=adam),
      "set": jaxsparse.dst.set(0.9, update_every=1, end_step=100,
                               optimizer=adam),
  }


def _update(tx):
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params, mask_update=True)
    return optax.apply_updates(params, updates), state
  return step


@pytest.mark.parametrize("name", list(_methods()))
def test_sharded_mask_update_is_bit_identical_and_gathers_nothing(
    name, mesh):
  tx = _methods()[name]
  host = _params()
  # Ties: a block of equal magnitudes across the shard boundary.
  host["l1"]["kernel"] = host["l1"]["kernel"].at[:, 28:36].set(0.5)
  grads = jax.tree.map(lambda x: jnp.cos(3.0 * x), host)
  # Reference: one device, no mesh.
  ref_p, ref_s = jax.jit(_update(tx))(host, tx.init(host), grads)
  params, psh, state, ssh = _sharded_state(tx, host, mesh)
  g = jax.device_put(grads, psh)
  step = jax.jit(_update(tx), in_shardings=(psh, ssh, psh),
                 out_shardings=(psh, ssh))
  with jax.set_mesh(mesh):
    hlo = step.lower(params, state, g).compile().as_text()
    new_p, new_s = step(params, state, g)
  for a, b in zip(jax.tree.leaves(jaxsparse.get_masks(ref_s)),
                  jax.tree.leaves(jaxsparse.get_masks(new_s)), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for a, b in zip(jax.tree.leaves(ref_p), jax.tree.leaves(new_p),
                  strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
  assert new_s.masks["l1"]["kernel"].sharding.spec == P(None, "model")
  comm = dist.collective_bytes(hlo)
  assert comm.get("all-gather", 0) == 0, comm
  assert comm.get("all-to-all", 0) == 0, comm
  param_bytes = sum(x.size * 4 for x in jax.tree.leaves(host))
  # Histograms and counts only: a small fraction of the weights' bytes.
  assert sum(comm.values()) <= 0.02 * param_bytes, (comm, param_bytes)


def test_one_shot_scores_on_a_mesh(mesh):
  """SNIP/SynFlow-style scores are gradients: computed where the weights
  live; `jaxsparse.masks` of sharded scores equals the single-device one."""
  host = _params(1)
  psh = dist.param_shardings(host, mesh)
  x = jax.random.normal(jax.random.PRNGKey(2), (16, 96))

  def loss(p):
    h = jax.nn.relu(x @ p["l0"]["kernel"] + p["l0"]["bias"])
    h = jax.nn.relu(h @ p["l1"]["kernel"] + p["l1"]["bias"])
    return jnp.sum(h @ p["l2"]["kernel"])

  def masks(p):
    scores = jax.tree.map(lambda w, g: jnp.abs(w * g), p, jax.grad(loss)(p))
    return jaxsparse.masks(scores, 0.95,
                           allocation=jaxsparse.allocation.global_())

  ref = jax.jit(masks)(host)
  msh = jax.tree.map(lambda s: s, psh)
  f = jax.jit(masks, in_shardings=(psh,),
              out_shardings=dist.like_params(
                  jax.eval_shape(masks, host), host, msh))
  with jax.set_mesh(mesh):
    got = f(jax.device_put(host, psh))
  for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_wanda_on_a_column_sharded_kernel(mesh):
  w = jax.random.normal(jax.random.PRNGKey(3), (128, 256))
  x_norm = jnp.abs(jax.random.normal(jax.random.PRNGKey(4), (128,))) + 0.1
  ref_w, ref_m = jaxsparse.posttrain.wanda(w, x_norm, sparsity=0.5)
  sh = NamedSharding(mesh, P(None, "model"))
  with jax.set_mesh(mesh):
    got_w, got_m = jaxsparse.posttrain.wanda(
        jax.device_put(w, sh), x_norm, sparsity=0.5)
  np.testing.assert_array_equal(np.asarray(ref_m), np.asarray(got_m))
  np.testing.assert_array_equal(np.asarray(ref_w), np.asarray(got_w))


def test_collective_bytes_reads_hlo():
  text = "\n".join([
      "  %ag = f32[8,128]{1,0} all-gather(f32[2,128]{1,0} %p), dims={0}",
      "  %ar = (s32[256]{0}, s32[16]{0}) all-reduce(%a, %b), to_apply=%add",
      "  %s = f32[4]{0} all-reduce-start(f32[4]{0} %c), to_apply=%add",
      "  %d = f32[4]{0} all-reduce-done(f32[4]{0} %s)",
      "  %m = f32[64]{0} multiply(%x, %y)",
  ])
  assert dist.collective_bytes(text) == {
      "all-gather": 8 * 128 * 4, "all-reduce": (256 + 16) * 4 + 16}


def test_mask_update_lowers_for_tpu():
  """The TPU-only branch of the threshold search (counting passes, no
  scatter) lowers for TPU on this CPU machine."""
  tx = jaxsparse.prune(0.9, optimizer=optax.adam(1e-3))
  host = jax.eval_shape(_params)
  args = (host, jax.eval_shape(tx.init, host), host)
  # mask_update=None: the device decides (a host-decided True adds a
  # host-callback check, which cannot lower for TPU on a CPU machine).
  step = jax.jit(lambda p, st, g: tx.update(g, st, p))
  tpu = step.trace(*args).lower(lowering_platforms=("tpu",)).as_text()
  cpu = step.trace(*args).lower().as_text()
  assert "scatter" in cpu  # radix histograms
  assert "scatter" not in tpu


@pytest.mark.parametrize("name", [
    "vit_b16_imagenet.py:v4-32", "vit_b16_imagenet.py:v5e-64",
    "llama_c4.py:v4-32", "llama_c4.py:v5e-64"])
def test_pod_configs_validate_and_shard(name):
  """Pod configs plan on 8 CPU devices, with the slice's model axis (the
  data axis takes what the devices leave)."""
  import os  # pylint: disable=g-import-not-at-top

  from jaxsparse.experiments import config as config_lib  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  c = config_lib.load(os.path.join(root, "configs", "pod", name))
  plan = config_lib.validate(c)
  assert plan.runs
  data, model = config_lib.mesh_shape(c)
  assert data * model == 8 and model == c.mesh.model
  with pytest.raises(ValueError, match="slice"):
    config_lib.load(os.path.join(root, "configs", "pod",
                                 name.split(":")[0] + ":v9-1"))
