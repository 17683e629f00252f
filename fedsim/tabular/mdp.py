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

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import jax.numpy as jnp
import numpy as np

from fedsim.choices import INITS, REWARD_FORMS, STARTS, WEIGHTINGS
from fedsim.errors import ConfigError, check_choice, check_int, check_real, require


# Stream tags: one independent numpy stream per (seed, tag[, client]).
_P_SHARED, _P_CLIENT, _R0_SHARED, _R0_CLIENT, _H_CLIENT, _COUNTS, _THETA0, _RHO = range(8)


@dataclass(frozen=True)
class InstanceSpec:
    """Everything that defines an instance; `make_instance` turns it into arrays.

    lam: a constant feedback weight for every client, or a sequence of K values.
    lam_grid: (lo, hi) gives lam_k = lo + (hi - lo) * k / (K - 1), the authors' IMDb grid
        with (0.1, 0.9); it overrides `lam`. With K = 1 the single client gets lo.
    weights: "uniform", "samples" (p_k proportional to the client's sample count n_k, as
        in the authors' aggregation) or a sequence of K non-negative numbers.
    branching: how many next states each (s, a) can reach (None: all S).
    """

    num_clients: int = 10
    num_states: int = 20
    num_actions: int = 5
    gamma: float = 0.9
    transition_heterogeneity: float = 0.0
    reward_heterogeneity: float = 0.0
    branching: int | None = None
    r_max: float = 1.0
    h_max: float = 1.0
    lam: float | Sequence[float] = 0.5
    lam_grid: tuple[float, float] | None = None
    reward_form: str = "additive"
    weights: str | Sequence[float] = "uniform"
    start: str = "uniform"
    init: str = "zero"
    init_scale: float = 1.0
    seed: int = 0

    def validate(self) -> "InstanceSpec":
        K = check_int("clients (K)", self.num_clients, 1)
        S = check_int("states (S)", self.num_states, 1)
        check_int("actions (A)", self.num_actions, 2)
        check_real("gamma", self.gamma, 0.0, 1.0, hi_open=True)
        check_real("transition_heterogeneity", self.transition_heterogeneity, 0.0, 1.0)
        check_real("reward_heterogeneity", self.reward_heterogeneity, 0.0, 1.0)
        if self.branching is not None:
            check_int("branching", self.branching, 1, S)
        check_real("r_max", self.r_max, 0.0)
        check_real("h_max", self.h_max, 0.0)
        check_choice("reward_form", self.reward_form, REWARD_FORMS)
        check_choice("start", self.start, STARTS)
        check_choice("init", self.init, INITS)
        check_real("init_scale", self.init_scale, 0.0)
        check_int("seed", self.seed, 0)
        lam_max = 1.0 if self.reward_form == "convex" else None
        allowed = "must be in [0, 1] with the convex reward form" if lam_max else "must be >= 0"
        ok = lambda v: bool(np.isfinite(v) and v >= 0 and (lam_max is None or v <= lam_max))
        if self.lam_grid is not None:   # the grid's ends bound its values
            require(len(self.lam_grid) == 2 and all(map(ok, self.lam_grid)), "lam_grid",
                    list(self.lam_grid), "must be two numbers (lo, hi) that each " + allowed[5:])
        elif np.ndim(self.lam) == 0:
            require(ok(self.lam), "lam", self.lam, allowed)
        else:
            for k, value in enumerate(self.lam_values()):
                require(ok(value), f"lam[{k}]", float(value), allowed)
        if isinstance(self.weights, str):
            check_choice("weights", self.weights, WEIGHTINGS)
        else:
            w = np.asarray(self.weights, dtype=float)
            require(w.shape == (K,), "weights", list(self.weights), f"must hold K = {K} numbers")
            require(bool(np.all(np.isfinite(w)) and np.all(w >= 0)), "weights", list(self.weights),
                    "must be finite and non-negative")
            require(bool(w.sum() > 0), "weights", list(self.weights), "must not be all zero")
        return self

    def lam_values(self) -> np.ndarray:
        K = self.num_clients
        if self.lam_grid is not None:
            lo, hi = self.lam_grid
            return lo + (hi - lo) * np.arange(K) / max(K - 1, 1)
        lam = np.asarray(self.lam, dtype=float)
        if lam.ndim == 0:
            return np.full(K, float(lam))
        if lam.shape != (K,):
            raise ConfigError("lam", list(lam), f"must be one number or K = {K} numbers")
        return lam


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


def client_data(instance: TabularInstance) -> dict:
    """The per-client arrays the engine vmaps over (leading axis K), as jnp arrays.

    The shaped reward is not stored: the task builds it from R0, H and lam inside the
    compiled program, so grids over lam need no new data.
    """
    return {
        "P": jnp.asarray(instance.P),
        "R0": jnp.asarray(instance.R0),
        "H": jnp.asarray(instance.H),
        "lam": jnp.asarray(instance.lam),
    }

