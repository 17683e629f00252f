"""A seeded family of heterogeneous tabular MDPs: the FedRLHF setting in its exact form.

Client k has dynamics P_k, intrinsic reward R0_k with |R0_k| <= r_max, human feedback
H_k with |H_k| <= h_max, a feedback weight lam_k and an aggregation weight p_k; all
clients share S, A, the discount gamma and the start distribution rho. The shaped reward
is either (Fan et al. 2025, eq. for R_k)

    additive:  r_k = R0_k + lam_k * H_k
    convex:    r_k = lam_k * H_k + (1 - lam_k) * R0_k      (the authors' IMDb code)

Heterogeneity knobs mix a shared component with a client-own one, so 0 means identical
clients and 1 fully independent ones. Client k's arrays are drawn from a random stream
keyed by (seed, k) alone, so adding clients never changes the existing ones.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fedsim.choices import REWARD_FORMS
from fedsim.tabular.config import InstanceSpec
from fedsim.errors import ConfigError


# Stream tags: one independent numpy stream per (seed, tag[, client]).
_P_SHARED, _P_CLIENT, _R0_SHARED, _R0_CLIENT, _H_CLIENT, _COUNTS, _THETA0, _RHO = range(8)


class TabularInstance(NamedTuple):
    """The arrays of one instance (numpy, float32). Leading axis K is the client axis."""

    P: np.ndarray          # (K, S, A, S) transition probabilities
    R0: np.ndarray         # (K, S, A) intrinsic reward, |R0| <= r_max
    H: np.ndarray          # (K, S, A) human feedback, |H| <= h_max
    lam: np.ndarray        # (K,) feedback weights
    p: np.ndarray          # (K,) aggregation weights, sum 1
    n_samples: np.ndarray  # (K,) the clients' sample counts (what "samples" weighting uses)
    rho: np.ndarray        # (S,) start distribution
    theta0: np.ndarray     # (S, A) initial logits
    gamma: float
    reward_form: str

    @property
    def num_clients(self) -> int:
        return self.P.shape[0]

    @property
    def shared_dynamics(self) -> bool:
        return bool(np.all(self.P == self.P[:1]))

    def shaped_reward(self) -> np.ndarray:
        return np.asarray(shaped_reward(self.R0, self.H, self.lam, self.reward_form))


def shaped_reward(R0, H, lam, form: str):
    """r_k = R0_k + lam_k H_k (additive) or lam_k H_k + (1 - lam_k) R0_k (convex); jnp or np."""
    lam = lam[..., None, None]
    if form == "additive":
        return R0 + lam * H
    if form == "convex":
        return lam * H + (1.0 - lam) * R0
    raise ConfigError("reward_form", form, f"must be one of {', '.join(REWARD_FORMS)}")


def _rng(seed: int, *tags: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *tags]))


def _random_kernel(rng: np.random.Generator, S: int, A: int, branching: int) -> np.ndarray:
    """Rows P(. | s, a): Dirichlet(1) weights on `branching` next states drawn at random."""
    kernel = np.zeros((S, A, S))
    weights = rng.dirichlet(np.ones(branching), size=(S, A))
    for s in range(S):
        for a in range(A):
            kernel[s, a, rng.choice(S, size=branching, replace=False)] = weights[s, a]
    return kernel


def _stochastic_f32(kernel: np.ndarray) -> np.ndarray:
    kernel = kernel.astype(np.float32)
    return kernel / kernel.sum(axis=-1, keepdims=True)


def make_instance(spec: InstanceSpec) -> TabularInstance:
    """Draw the instance that `spec` names (validated first; numpy only, no compilation)."""
    spec.validate()
    K, S, A, seed = spec.num_clients, spec.num_states, spec.num_actions, spec.seed
    branching = spec.branching or S
    h_P, h_R = spec.transition_heterogeneity, spec.reward_heterogeneity

    P_shared = _random_kernel(_rng(seed, _P_SHARED), S, A, branching)
    R0_shared = spec.r_max * _rng(seed, _R0_SHARED).uniform(0.0, 1.0, (S, A))
    P, R0, H, counts = [], [], [], []
    for k in range(K):
        own_P = _random_kernel(_rng(seed, _P_CLIENT, k), S, A, branching) if h_P > 0 else 0.0
        own_R0 = spec.r_max * _rng(seed, _R0_CLIENT, k).uniform(0.0, 1.0, (S, A)) if h_R > 0 else 0.0
        P.append((1 - h_P) * P_shared + h_P * own_P)
        R0.append((1 - h_R) * R0_shared + h_R * own_R0)
        H.append(spec.h_max * _rng(seed, _H_CLIENT, k).uniform(-1.0, 1.0, (S, A)))
        # Sample counts log-uniform in [50, 1000]: stands in for unequal client data sizes.
        counts.append(int(np.exp(_rng(seed, _COUNTS, k).uniform(np.log(50), np.log(1000)))))
    counts = np.asarray(counts)

    if isinstance(spec.weights, str):
        weights = np.ones(K) if spec.weights == "uniform" else counts.astype(float)
    else:
        weights = np.asarray(spec.weights, dtype=float)
    rho = np.full(S, 1.0 / S) if spec.start == "uniform" else _rng(seed, _RHO).dirichlet(np.ones(S))
    theta0 = (np.zeros((S, A)) if spec.init == "zero"
              else spec.init_scale * _rng(seed, _THETA0).standard_normal((S, A)))
    return TabularInstance(
        P=_stochastic_f32(np.stack(P)),
        R0=np.stack(R0).astype(np.float32),
        H=np.stack(H).astype(np.float32),
        lam=spec.lam_values().astype(np.float32),
        p=(weights / weights.sum()).astype(np.float32),
        n_samples=counts,
        rho=(rho / rho.sum()).astype(np.float32),
        theta0=theta0.astype(np.float32),
        gamma=float(spec.gamma),
        reward_form=spec.reward_form,
    )


class ClientMDP(NamedTuple):
    """Client k's environment and feedback (leading axis K in the engine)."""

    P: jax.Array    # (S, A, S) transition probabilities
    R0: jax.Array   # (S, A) intrinsic reward
    H: jax.Array    # (S, A) the human-feedback reward


def client_data(instance: TabularInstance) -> ClientMDP:
    """The per-client arrays the engine vmaps over (leading axis K), as jnp arrays.

    The shaped reward is not stored: the task builds it from R0, H and lambda (a
    hyperparameter, fedsim.tabular.task.TabularHParams) inside the compiled program, so
    grids over lambda need no new data.
    """
    return ClientMDP(jnp.asarray(instance.P), jnp.asarray(instance.R0), jnp.asarray(instance.H))

