"""W1 in Flower's simulation engine: the bench's `flower` mode (optional: `pip install -e ".[bench]"`).

The same FedAvg rounds as the other modes (exact policy gradients, E local steps, weights
p_k), as a Flower user writes them today: a message-API `ClientApp` whose train function
runs the numpy client update (`workloads.numpy_gradient`, float64) on its own client's MDP,
Flower's own `FedAvg` strategy in a `ServerApp`, both run by `flwr.simulation.run_simulation`
(Ray actors on this machine's CPUs). Flower's own timing: each round, from the strategy's
evaluation callback (called before the first round and after each); ours is the whole
`run_simulation` call, with Ray's start-up and shut-down.
"""

from __future__ import annotations

import functools
import logging
import time

import numpy as np

from fedsim.bench import workloads as W


@functools.lru_cache(maxsize=1)
def _client_problem(num_clients: int):
    """Each Ray actor rebuilds the (seeded) instance once; client k takes its row."""
    instance = W.instance_for(num_clients)
    return (instance.P.astype(np.float64), instance.shaped_reward().astype(np.float64),
            instance.rho.astype(np.float64), instance.p, instance.gamma)


def _apps(num_clients: int, rounds: int, out: dict):
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg

    client_app = ClientApp()

    @client_app.train()
    def train(msg: Message, context: Context):
        k = int(context.node_config["partition-id"])
        P, r, rho, p, gamma = _client_problem(int(context.node_config["num-partitions"]))
        theta = msg.content["arrays"].to_numpy_ndarrays()[0]
        for _ in range(W.LOCAL_STEPS):
            theta = theta + W.STEP_SIZE * W.numpy_gradient(theta, P[k], r[k], rho, gamma)
        # FedAvg weighs replies by "num-examples": here the client's weight p_k
        return Message(RecordDict({"arrays": ArrayRecord([theta]),
                                   "metrics": MetricRecord({"num-examples": float(p[k])})}),
                       reply_to=msg)

    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context):
        strategy = FedAvg(fraction_evaluate=0.0, min_train_nodes=num_clients,
                          min_available_nodes=num_clients)
        theta0 = W.instance_for(num_clients).theta0.astype(np.float64)
        stamps = []

        def stamp(server_round, arrays):
            stamps.append(time.perf_counter())

        result = strategy.start(grid=grid, initial_arrays=ArrayRecord([theta0]),
                                num_rounds=rounds, evaluate_fn=stamp)
        out["round_seconds"] = list(np.diff(stamps))
        out["theta"] = result.arrays.to_numpy_ndarrays()[0]

    return server_app, client_app


def run(num_clients: int, rounds: int) -> dict:
    """{"theta": the global logits after `rounds`, "round_seconds": Flower's time for each
    round, "seconds": the whole simulation's}. Flower's INFO log is silenced."""
    from flwr.simulation import run_simulation

    out: dict = {}
    server_app, client_app = _apps(num_clients, rounds, out)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    start = time.perf_counter()
    run_simulation(server_app, client_app, num_supernodes=num_clients,
                   backend_config={"client_resources": {"num_cpus": 1}})
    out["seconds"] = time.perf_counter() - start
    if "theta" not in out:
        raise RuntimeError(f"Flower's simulation of W1 with K={num_clients} returned no model "
                           "(a client failed; Flower logged why above)")
    return out
