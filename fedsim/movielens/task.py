"""The MovieLens FedRLHF task: a Q-network recommender trained by local fitted Q-learning on
the shaped reward R0 + lambda_k r_k, with personal parameters and a reward model that stay on
the client.

State s = (user, movie); actions {recommend, skip}. Intrinsic reward R0(s, recommend) = +1 if
the rating is >= 4 else -1, and R0(s, skip) = -R0(s, recommend) (the authors' +-1 for matching
the label). The feedback reward r_k(s, recommend) = tanh(reward model), r_k(s, skip) = -r_k(s,
recommend), so |r_k| <= H_max = 1. Both actions' rewards are known in this simulation, so a
local step regresses Q(s, .) on them for a minibatch of the client's training ratings (fitted Q
with full information). The authors bootstrap with gamma = 0.99: ModelSpec.gamma > 0 adds
gamma max_a' Q(s', a') to both actions' targets, s' the client's next training rating (held
fixed, no gradient). The next item does not depend on the action taken, so that term is the
same for both actions and leaves the target of the recommendation score Q(s, rec) - Q(s, skip)
unchanged. gamma = 0 is the default: on ml-latest-small, 0.99 cost 4.7 points of held-out
accuracy (README), as the regression chases a growing Q level without a target network.

Shared (aggregated) parameters: movie embeddings and the MLP (flax). Private: each of the
client's users' embedding and action biases (personalisation; a client holds one user or a
group), and the reward model's weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedsim.choices import UPDATES
from fedsim.engine import Task
from fedsim.errors import check_choice, check_int, check_real, require




@dataclass(frozen=True)
class ModelSpec:
    """update: "fitted_q" regresses Q(s, .) on both actions' rewards; "soft_q" fits the
    policy softmax(Q(s, .)) to the soft-optimal one, softmax(r(s, .) / temperature), by
    cross-entropy (the one-step soft Q-learning optimum, Haarnoja et al. 2017, projected as
    in policy distillation, Rusu et al. 2016); "policy_gradient" treats
    softmax(Q(s, .)) as a policy, samples an action per rating and ascends REINFORCE's
    estimate of the expected shaped reward (Williams 1992), with the minibatch mean reward
    as baseline."""

    dim: int = 16          # movie and user embedding size
    hidden: int = 64       # MLP width
    batch: int = 32        # ratings per local step
    private_lr: float = 0.03  # Adam step size of the private (user) parameters
    embedding_scale: float = 100.0   # SGD gain of the movie embeddings relative to the MLP
    reward_steps: int = 200   # gradient steps fitting the local reward model
    reward_l2: float = 0.01
    update: str = "fitted_q"
    gamma: float = 0.0     # bootstrap discount of the fitted-Q targets (the authors': 0.99)
    temperature: float = 0.5   # of the soft-optimal policy ("soft_q"; 0.25, 1, 2 did worse)
    year: bool = False     # the movie's release year among the Q-network's inputs

    def validate(self) -> "ModelSpec":
        for name in ("dim", "hidden", "batch", "reward_steps"):
            check_int(name, getattr(self, name), 1)
        check_real("private_lr", self.private_lr, 0.0)
        check_real("embedding_scale", self.embedding_scale, 0.0)
        check_real("reward_l2", self.reward_l2, 0.0)
        check_choice("update", self.update, UPDATES)
        check_real("gamma", self.gamma, 0.0, 1.0, hi_open=True)
        check_real("temperature", self.temperature, 0.0, lo_open=True)
        return self

    def inputs_dim(self, num_genres: int) -> int:
        """Width of the Q-network's movie features (`movie_inputs`)."""
        return num_genres + int(self.year)


def movie_inputs(genres: np.ndarray, year: np.ndarray | None, spec: ModelSpec) -> np.ndarray:
    """The Q-network's movie features: the genres, and with spec.year the release year
    standardised over the movies whose year is known (0, the mean, where it is not)."""
    if not spec.year:
        return genres
    known = np.zeros(0) if year is None else year[np.isfinite(year)]
    require(len(known) > 0, "year", True,
            "needs release years, and these ratings have none (no movie titles)")
    z = np.nan_to_num((year - known.mean()) / max(float(known.std()), 1e-6))
    return np.concatenate([genres, z[:, None]], 1).astype(np.float32)


class QNetwork(nn.Module):
    """Q(s, .) for s = (movie, its features, the user's embedding): two action values."""

    num_movies: int
    dim: int
    hidden: int

    @nn.compact
    def __call__(self, movie, features, user):
        emb = nn.Embed(self.num_movies, self.dim, name="movies",
                       embedding_init=nn.initializers.normal(0.01))(movie)
        user = jnp.broadcast_to(user, emb.shape[:-1] + user.shape[-1:])
        h = nn.relu(nn.Dense(self.hidden, name="hidden")(jnp.concatenate([emb, features, user], -1)))
        return nn.Dense(2, name="q")(h)


def reward_features(genres: np.ndarray) -> jnp.ndarray:
    """[genres, 1]: the local reward model is linear in a movie's genres plus a bias."""
    return jnp.asarray(np.concatenate([genres, np.ones((genres.shape[0], 1), np.float32)], 1))


def fit_reward_model(data, features, spec: ModelSpec):
    """Weights w with r(m) = w . features[m], fitted on the client's own feedback: a
    Bradley-Terry likelihood for the comparisons, P(i > j) = sigmoid(r(i) - r(j)), plus a
    logistic likelihood for the direct "too low" (+1) / "too high" (-1) answers."""
    f_i, f_j = features[data["pair_i"]], features[data["pair_j"]]
    f_d = features[data["train_movie"]]
    rated = data["train_mask"] * (data["direct"] != 0)

    def loss(w):
        bt = jax.nn.log_sigmoid(jnp.where(data["pair_pref"] > 0, 1.0, -1.0) * ((f_i - f_j) @ w))
        direct = jax.nn.log_sigmoid(data["direct"] * (f_d @ w))
        n = jnp.maximum(data["pair_mask"].sum() + rated.sum(), 1.0)
        return -(jnp.sum(bt * data["pair_mask"]) + jnp.sum(direct * rated)) / n \
            + spec.reward_l2 * jnp.sum(w ** 2)

    step = lambda _, w: w - 1.0 * jax.grad(loss)(w)
    return jax.lax.fori_loop(0, spec.reward_steps, step, jnp.zeros(features.shape[1]))


def make_task(num_movies: int, genres: np.ndarray, spec: ModelSpec,
              year: np.ndarray | None = None) -> tuple[Task, nn.Module]:
    """The engine's view. Client data: make_clients(...) arrays; genres: (movies, G); year:
    (movies,) release years, needed with spec.year."""
    spec.validate()
    net = QNetwork(num_movies, spec.dim, spec.hidden)
    input_table = jnp.asarray(movie_inputs(genres, year, spec))
    features = reward_features(genres)

    def q_values(params, private, movie, member):
        """Q(s, .) of the ratings (movie, member): member indexes the client's users."""
        return (net.apply(params, movie, input_table[movie], private["user"][member])
                + private["bias"][member])

    # Local optimiser: Adam (state private, never aggregated) on the MLP and on the personal
    # parameters; the movie embeddings, whose rows are touched sparsely, take plain gradient
    # steps with gain `embedding_scale`. The engine scales the shared direction by its lr.
    template = init_params(net, jax.random.key(0), input_table.shape[1], spec.dim)
    shared_opt, personal_opt = optax.adam(1.0), optax.adam(spec.private_lr)

    def init_private(data, key):
        members = data["member_mask"].shape[-1]
        personal = {"user": 0.01 * jax.random.normal(key, (members, spec.dim)),
                    "bias": jnp.zeros((members, 2))}
        return {**personal, "reward": fit_reward_model(data, features, spec),
                "mlp_opt": shared_opt.init(_mlp(template)),
                "personal_opt": personal_opt.init(personal)}

    def shaped_targets(private, data, movie, label):
        feedback = jnp.tanh(features[movie] @ private["reward"])
        recommend = (2 * label - 1) + data["lam"] * feedback
        return jnp.stack([recommend, -recommend], -1)

    def direction(params, private, data, key):
        batch_key, action_key = jax.random.split(key)
        u = jax.random.uniform(batch_key, (spec.batch,))
        idx = jnp.floor(u * data["train_count"]).astype(int)
        movie, label, member = (data[f"train_{c}"][idx] for c in ("movie", "label", "member"))
        targets = shaped_targets(private, data, movie, label)
        if spec.gamma > 0:
            following = (idx + 1) % jnp.maximum(data["train_count"], 1).astype(int)
            q_next = q_values(params, private, data["train_movie"][following],
                              data["train_member"][following])
            targets = targets + spec.gamma * jax.lax.stop_gradient(q_next.max(-1))[:, None]
        personal = {"user": private["user"], "bias": private["bias"]}

        def loss(params, personal):
            q = q_values(params, {**private, **personal}, movie, member)
            if spec.update == "fitted_q":
                return 0.5 * jnp.mean(jnp.sum((q - targets) ** 2, -1))
            if spec.update == "soft_q":
                soft_optimal = jax.nn.softmax(targets / spec.temperature)
                return -jnp.mean(jnp.sum(soft_optimal * jax.nn.log_softmax(q), -1))
            action = jax.random.categorical(action_key, jax.lax.stop_gradient(q))
            reward = jnp.take_along_axis(targets, action[:, None], 1)[:, 0]
            log_pi = jnp.take_along_axis(jax.nn.log_softmax(q), action[:, None], 1)[:, 0]
            return -jnp.mean((reward - reward.mean()) * log_pi)

        g_params, g_personal = jax.grad(loss, argnums=(0, 1))(params, personal)
        mlp_step, mlp_opt = shared_opt.update(_mlp(g_params), private["mlp_opt"])
        step, personal_opt_state = personal_opt.update(g_personal, private["personal_opt"])
        personal = optax.apply_updates(personal, step)
        emb = jax.tree.map(lambda g: -spec.embedding_scale * g, g_params["params"]["movies"])
        ascent = {"params": {**mlp_step["params"], "movies": emb}}
        return ascent, {**private, **personal, "mlp_opt": mlp_opt,
                        "personal_opt": personal_opt_state}

    def scores(params, private, movie, member):
        q = q_values(params, private, movie, member)
        return q[..., 0] - q[..., 1]   # > 0: recommend

    def evaluate(params, client_params, private, data, weights):
        global_model = jax.vmap(scores, (None, 0, 0, 0))
        personal_model = jax.vmap(scores, (0, 0, 0, 0))
        part = lambda name: (data[f"{name}_movie"], data[f"{name}_member"])
        return {
            "test_score": global_model(params, private, *part("test")),
            "test_score_personal": personal_model(client_params, private, *part("test")),
            "train_score": global_model(params, private, *part("train")),
            "val_score": global_model(params, private, *part("val")),
        }

    return Task(init_private, direction, evaluate), net


def _mlp(params):
    """The shared parameters other than the movie embeddings."""
    return {"params": {k: v for k, v in params["params"].items() if k != "movies"}}


def num_params(num_movies: int, inputs_dim: int, spec: ModelSpec) -> int:
    """The QNetwork's parameter count (movie embeddings, hidden and output layers), known
    without building it (a test checks it against flax)."""
    width = 2 * spec.dim + inputs_dim   # [movie embedding, features, user embedding]
    return num_movies * spec.dim + (width + 1) * spec.hidden + (spec.hidden + 1) * 2


def init_params(net: QNetwork, key, inputs_dim: int, dim: int):
    """inputs_dim: ModelSpec.inputs_dim(number of genres)."""
    return net.init(key, jnp.zeros(1, jnp.int32), jnp.zeros((1, inputs_dim)), jnp.zeros(dim))
