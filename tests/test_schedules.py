"""Pruning schedules: Zhu & Gupta values, update steps, iterative rounds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsparse as js


def values(fn, steps):
  return np.asarray([float(fn(jnp.asarray(t))) for t in steps])


# --- polynomial (Zhu & Gupta, 2017) -----------------------------------------


def test_polynomial_zhu_gupta_values():
  sched = js.polynomial(0.9, begin_step=0, end_step=100, frequency=25)
  got = values(sched.sparsity, [0, 25, 50, 75, 100, 101, 1000])
  want = [0.0, 0.5203125, 0.7875, 0.8859375, 0.9, 0.9, 0.9]
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  assert sched.final_sparsity == 0.9


def test_polynomial_matches_formula_with_offset_and_initial():
  s_i, s_f, t0, t1, power = 0.2, 0.95, 30, 230, 3.0
  sched = js.polynomial(s_f, t0, t1, frequency=10, initial_sparsity=s_i,
                        power=power)
  steps = np.arange(0, 300, 7)
  p = np.clip((steps - t0) / (t1 - t0), 0.0, 1.0)
  want = s_f + (s_i - s_f) * (1.0 - p) ** power
  np.testing.assert_allclose(values(sched.sparsity, steps), want, atol=1e-6)
  # Before begin_step the target is the initial sparsity.
  assert float(sched.sparsity(0)) == pytest.approx(s_i)


def test_polynomial_is_monotone_and_jittable():
  sched = js.polynomial(0.8, 10, 110, frequency=20)
  steps = jnp.arange(0, 150)
  eager = values(sched.sparsity, range(150))
  jitted = np.asarray(jax.jit(jax.vmap(sched.sparsity))(steps))
  np.testing.assert_allclose(jitted, eager, atol=1e-7)
  assert np.all(np.diff(eager) >= 0)
  assert eager[0] == 0.0 and eager[-1] == pytest.approx(0.8)


def test_polynomial_update_steps():
  sched = js.polynomial(0.9, begin_step=10, end_step=95, frequency=20)
  upd = [t for t in range(200) if bool(sched.is_update_step(jnp.asarray(t)))]
  # t0, t0 + f, ... while <= end, and end itself.
  assert upd == [10, 30, 50, 70, 90, 95]


def test_polynomial_update_steps_end_on_grid():
  sched = js.polynomial(0.5, begin_step=0, end_step=100, frequency=25)
  upd = [t for t in range(300) if bool(sched.is_update_step(t))]
  assert upd == [0, 25, 50, 75, 100]


@pytest.mark.parametrize("begin,end", [(10, 10), (10, 5)])
def test_polynomial_end_not_after_begin_raises(begin, end):
  with pytest.raises(ValueError, match="end_step"):
    js.polynomial(0.5, begin_step=begin, end_step=end)


@pytest.mark.parametrize("kwargs,name", [
    (dict(final_sparsity=1.5), "final_sparsity"),
    (dict(final_sparsity=-0.1), "final_sparsity"),
    (dict(final_sparsity=0.5, initial_sparsity=2.0), "initial_sparsity"),
    (dict(final_sparsity=float("nan")), "final_sparsity"),
])
def test_polynomial_sparsity_out_of_range_raises(kwargs, name):
  with pytest.raises(ValueError, match=name):
    js.polynomial(begin_step=0, end_step=10, **kwargs)


def test_polynomial_bad_frequency_and_steps_raise():
  with pytest.raises(ValueError, match="frequency"):
    js.polynomial(0.5, 0, 10, frequency=0)
  with pytest.raises(ValueError, match="begin_step"):
    js.polynomial(0.5, -1, 10)


# --- iterative (lottery tickets) --------------------------------------------


def test_iterative_density_is_power_of_remaining_fraction():
  f, every, rounds, t0 = 0.2, 10, 5, 3
  sched = js.iterative(f, every=every, num_rounds=rounds, begin_step=t0)
  for t in range(0, 100):
    j = 0 if t < t0 else min((t - t0) // every + 1, rounds)
    density = 1.0 - float(sched.sparsity(t))
    assert density == pytest.approx((1 - f) ** j, rel=1e-6), t
  upd = [t for t in range(100) if bool(sched.is_update_step(t))]
  assert upd == [3, 13, 23, 33, 43]
  assert sched.final_sparsity == pytest.approx(1 - 0.8 ** 5)


def test_iterative_validation():
  with pytest.raises(ValueError, match="fraction"):
    js.iterative(1.2, every=1, num_rounds=1)
  with pytest.raises(ValueError):
    js.iterative(0.2, every=0, num_rounds=1)
  with pytest.raises(ValueError):
    js.iterative(0.2, every=1, num_rounds=0)


# --- one_shot / constant ----------------------------------------------------


def test_one_shot():
  sched = js.one_shot(0.7, at_step=5)
  np.testing.assert_allclose(values(sched.sparsity, range(10)),
                             [0.0] * 5 + [0.7] * 5, atol=1e-7)
  upd = [t for t in range(50) if bool(sched.is_update_step(t))]
  assert upd == [5]
  assert sched.final_sparsity == 0.7


def test_constant_is_one_shot_at_zero():
  sched = js.constant(0.3)
  assert float(sched.sparsity(0)) == pytest.approx(0.3)
  assert float(sched.sparsity(99)) == pytest.approx(0.3)
  assert [t for t in range(20) if bool(sched.is_update_step(t))] == [0]


@pytest.mark.parametrize("bad", [-0.01, 1.01, float("nan")])
def test_one_shot_and_constant_validate(bad):
  with pytest.raises(ValueError, match="sparsity"):
    js.one_shot(bad)
  with pytest.raises(ValueError, match="sparsity"):
    js.constant(bad)
  with pytest.raises(ValueError, match="at_step"):
    js.one_shot(0.5, at_step=-2)


def test_schedule_mask_has_exact_count_at_every_update():
  """Drives `prune` through a polynomial schedule (the §1 count property)."""
  sched = js.polynomial(0.9, begin_step=0, end_step=100, frequency=25)
  w = jnp.asarray(np.random.RandomState(0).randn(17, 13), jnp.float32)
  params = {"w": w}
  tx = js.prune(sched)
  state = tx.init(params)
  step = jax.jit(tx.update)
  n = w.size
  for t in range(101):
    _, state = step({"w": jnp.ones_like(w)}, state, params)
    zeros = int(np.sum(~np.asarray(js.get_masks(state)["w"])))
    if t in (0, 25, 50, 75, 100):
      s = float(sched.sparsity(t))
      assert zeros == int(np.floor(np.float32(s) * n + np.float32(0.5))), t
  assert zeros == int(np.floor(0.9 * n + 0.5))
