"""What a learning problem gives the engine: per-client pure functions (the engine vmaps them).

    task = Task(init_private, direction, evaluate)

init_private(data_k, key) -> private_k
    State that stays on client k and is not learnt by the client optimiser: a local reward
    model, a value table, counters. The engine never aggregates or broadcasts it.
direction(params, personal_k, private_k, data_k, hparams_k, key) -> Direction
    The ascent direction of client k's local objective at `params` (an exact or stochastic
    gradient, a Q-learning target step, ...), the ascent direction of its personal
    parameters, its new private state and aux metrics (scalars: a loss, a norm).
evaluate(global_params, clients, data, hparams, weights) -> (metrics, client_metrics)
    A round's metrics, given the global parameters and every client's state (`ClientState`,
    leading axis K: a client evaluates its own personal model; only the metrics leave it).
    metrics are about the whole federation (scalars, or arrays without a client axis);
    client_metrics have a leading client axis K (the engine drops padded clients' rows).

client_optimizer turns a direction into a step (optax, unit learning rate; the engine scales
its output by the round's step size eta[t, e], so step-size schedules and grids need no
recompilation); its state is part of each client's engine state. The default is plain
ascent, params + eta * direction. Personal parameters (init_personal; never aggregated) take
personal_optimizer's steps unscaled: their step size is the optimiser's own.
hparams_k: the task's per-client hyperparameters (e.g. lambda_k), a pytree with a leading
client axis K, an input of the compiled run (grids over them are vmaps).

kl: what a task gives algorithms that pull each client toward a reference policy built from
its peers' (fedsim.algorithms.fedkl), or None if it cannot:
    mix(client_params (K, ...), W (m, K), mixing) -> references (m, ...): client k's
        reference from every client's policy by `mixing` (fedsim.choices.MIXINGS: the
        geometric, normalised prod_j pi_j^W_kj; its unnormalised form; the arithmetic
        sum_j W_kj pi_j);
    direction(params, personal_k, private_k, data_k, hparams_k, key, reference_k, coef)
        -> Direction of the local objective with the penalty -coef * KL(pi_params || ref_k);
    divergence(params, reference_k, data_k, hparams_k) -> KL(pi_params || ref_k), the
        task's measure of it (tabular: exact, averaged over the discounted occupancy).
An algorithm asks for the penalty by sending a `Reference` as the client's message.

report(params, private_k, data_k, hparams_k) -> dict of scalars, or None: what client k tells
the server besides its parameters at each communication (e.g. its recent return), for
algorithms that weigh the clients by it (Algorithm.reads_reports).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import optax

#: Plain ascent: the step is the direction (optax minimises, so it is fed the negated
#: direction, and sgd(1) negates it back; both negations are exact).
ASCENT = optax.sgd(1.0)


def _no_personal(data, key):
    return ()


class Direction(NamedTuple):
    params: Any              # the ascent direction for the shared parameters
    personal: Any = ()       # ... for the client's personal parameters
    private: Any = ()        # the client's new private state
    aux: dict = {}           # scalars reported per local step (averaged over a round's steps)


class Reference(NamedTuple):
    """A message that puts a KL penalty to `policy` into the client's local objective."""

    policy: Any   # the reference, in the task's form (KLPenalty.mix)
    coef: Any     # the penalty's coefficient beta >= 0


class KLPenalty(NamedTuple):
    mix: Callable[..., Any]
    direction: Callable[..., Direction]
    divergence: Callable[..., Any]


class Task(NamedTuple):
    init_private: Callable[..., Any]
    direction: Callable[..., Direction]
    evaluate: Callable[..., tuple[dict, dict]]
    client_optimizer: optax.GradientTransformation = ASCENT
    init_personal: Callable[..., Any] = _no_personal
    personal_optimizer: optax.GradientTransformation = ASCENT
    kl: KLPenalty | None = None
    report: Callable[..., dict] | None = None
