"""The seeded tabular MDP family."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.errors import ConfigError
from fedsim.tabular.mdp import make_instance, shaped_reward
from fedsim.tabular.config import InstanceSpec


def test_instance_is_valid_and_bounded():
    spec = InstanceSpec(num_clients=5, num_states=7, num_actions=3, transition_heterogeneity=0.4,
                        reward_heterogeneity=0.6, branching=3, r_max=2.0, h_max=0.5, seed=1)
    inst = make_instance(spec)
    assert inst.P.shape == (5, 7, 3, 7) and inst.R0.shape == inst.H.shape == (5, 7, 3)
    np.testing.assert_allclose(inst.P.sum(-1), 1.0, rtol=1e-6)
    assert inst.P.min() >= 0 and inst.R0.min() >= 0 and inst.R0.max() <= 2.0
    assert np.abs(inst.H).max() <= 0.5
    np.testing.assert_allclose(inst.p.sum(), 1.0, rtol=1e-6)
    assert not inst.shared_dynamics
    assert not np.allclose(inst.H[0], inst.H[1])  # feedback is client-specific


def test_zero_heterogeneity_shares_dynamics_and_intrinsic_reward():
    inst = make_instance(InstanceSpec(num_clients=4, seed=2))
    assert inst.shared_dynamics
    np.testing.assert_array_equal(inst.R0, np.broadcast_to(inst.R0[0], inst.R0.shape))


def test_branching_limits_reachable_states():
    inst = make_instance(InstanceSpec(num_clients=1, num_states=9, branching=2, seed=0))
    assert np.all((inst.P > 0).sum(-1) <= 2)


def test_lambda_grid_weights_and_reward_forms():
    spec = InstanceSpec(num_clients=5, lam_grid=(0.1, 0.9), weights="samples", reward_form="convex")
    inst = make_instance(spec)
    np.testing.assert_allclose(inst.lam, [0.1, 0.3, 0.5, 0.7, 0.9], rtol=1e-6)  # the authors' grid
    np.testing.assert_allclose(inst.p, inst.n_samples / inst.n_samples.sum(), rtol=1e-6)
    lam = inst.lam[:, None, None]
    np.testing.assert_allclose(inst.shaped_reward(), lam * inst.H + (1 - lam) * inst.R0, rtol=1e-6)
    np.testing.assert_allclose(shaped_reward(inst.R0, inst.H, inst.lam, "additive"),
                               inst.R0 + lam * inst.H, rtol=1e-6)
    assert make_instance(InstanceSpec(num_clients=1, lam_grid=(0.1, 0.9))).lam[0] == pytest.approx(0.1)


def test_same_seed_same_instance_other_seed_other_instance():
    a, b = make_instance(InstanceSpec(seed=5)), make_instance(InstanceSpec(seed=5))
    c = make_instance(InstanceSpec(seed=6))
    for name in ("P", "R0", "H", "rho", "theta0"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.P, c.P)


def test_explicit_weights_are_normalised_and_checked():
    inst = make_instance(InstanceSpec(num_clients=3, weights=[1, 1, 2]))
    np.testing.assert_allclose(inst.p, [0.25, 0.25, 0.5])
    with pytest.raises(ConfigError, match="weights"):
        make_instance(InstanceSpec(num_clients=3, weights=[0, 0, 0]))
