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

Shared (aggregated) parameters: movie embeddings and the MLP (flax). Personal (the engine
keeps them on the client, never aggregated): each of the client's users' embedding and action
biases (personalisation; a client holds one user or a group). Private: the reward model's
weights. Optimisers (the engine's client and personal optimisers, their state per client):
Adam on the MLP, plain gradient steps with gain `embedding_scale` on the movie embeddings
(their rows are touched sparsely), both scaled by the run's step size; Adam with its own step
size `private_lr` on the personal parameters.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedsim.engine import Direction, Task
from fedsim.movielens.config import ModelSpec
from fedsim.errors import require


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
    fb = data.feedback
    f_i, f_j = features[fb.pair_i], features[fb.pair_j]
    f_d = features[data.train.movie]
    rated = data.train.mask * (fb.direct != 0)

    def loss(w):
        bt = jax.nn.log_sigmoid(jnp.where(fb.pair_pref > 0, 1.0, -1.0) * ((f_i - f_j) @ w))
        direct = jax.nn.log_sigmoid(fb.direct * (f_d @ w))
        n = jnp.maximum(fb.pair_mask.sum() + rated.sum(), 1.0)
        return -(jnp.sum(bt * fb.pair_mask) + jnp.sum(direct * rated)) / n \
            + spec.reward_l2 * jnp.sum(w ** 2)

    step = lambda _, w: w - 1.0 * jax.grad(loss)(w)
    return jax.lax.fori_loop(0, spec.reward_steps, step, jnp.zeros(features.shape[1]))


class Personal(NamedTuple):
    """A client's personal parameters (one row per user it holds), never aggregated."""

    user: jax.Array   # (users, dim) user embeddings
    bias: jax.Array   # (users, 2) action biases


class Private(NamedTuple):
    reward: jax.Array   # the local reward model's weights (fit_reward_model)


class MovieLensHParams(NamedTuple):
    """The task's per-client hyperparameters (leading axis K in the engine)."""

    lam: jax.Array   # lambda_k, the weight of client k's feedback reward


def make_task(num_movies: int, genres: np.ndarray, spec: ModelSpec,
              year: np.ndarray | None = None) -> tuple[Task, nn.Module]:
    """The engine's view. Client data: ClientData (make_clients); hyperparameters
    MovieLensHParams; genres: (movies, G); year: (movies,) release years, needed with
    spec.year."""
    spec.validate()
    net = QNetwork(num_movies, spec.dim, spec.hidden)
    input_table = jnp.asarray(movie_inputs(genres, year, spec))
    features = reward_features(genres)

    def q_values(params, personal, movie, member):
        """Q(s, .) of the ratings (movie, member): member indexes the client's users."""
        return (net.apply(params, movie, input_table[movie], personal.user[member])
                + personal.bias[member])

    client_optimizer = optax.multi_transform(
        {"mlp": optax.adam(1.0), "movies": optax.scale(-spec.embedding_scale)},
        lambda params: {"params": {name: jax.tree.map(lambda _: "movies" if name == "movies"
                                                       else "mlp", layer)
                                   for name, layer in params["params"].items()}})

    def init_personal(data, key):
        members = data.member_mask.shape[-1]
        return Personal(0.01 * jax.random.normal(key, (members, spec.dim)),
                        jnp.zeros((members, 2)))

    def init_private(data, key):
        return Private(fit_reward_model(data, features, spec))

    def shaped_targets(private, lam, movie, label):
        feedback = jnp.tanh(features[movie] @ private.reward)
        recommend = (2 * label - 1) + lam * feedback
        return jnp.stack([recommend, -recommend], -1)

    def direction(params, personal, private, data, hparams: MovieLensHParams, key):
        batch_key, action_key = jax.random.split(key)
        u = jax.random.uniform(batch_key, (spec.batch,))
        train = data.train
        idx = jnp.floor(u * train.count).astype(int)
        movie, label, member = train.movie[idx], train.label[idx], train.member[idx]
        targets = shaped_targets(private, hparams.lam, movie, label)
        if spec.gamma > 0:
            following = (idx + 1) % jnp.maximum(train.count, 1).astype(int)
            q_next = q_values(params, personal, train.movie[following], train.member[following])
            targets = targets + spec.gamma * jax.lax.stop_gradient(q_next.max(-1))[:, None]

        def loss(params, personal):
            q = q_values(params, personal, movie, member)
            if spec.update == "fitted_q":
                return 0.5 * jnp.mean(jnp.sum((q - targets) ** 2, -1))
            if spec.update == "soft_q":
                soft_optimal = jax.nn.softmax(targets / spec.temperature)
                return -jnp.mean(jnp.sum(soft_optimal * jax.nn.log_softmax(q), -1))
            action = jax.random.categorical(action_key, jax.lax.stop_gradient(q))
            reward = jnp.take_along_axis(targets, action[:, None], 1)[:, 0]
            log_pi = jnp.take_along_axis(jax.nn.log_softmax(q), action[:, None], 1)[:, 0]
            return -jnp.mean((reward - reward.mean()) * log_pi)

        value, (g_params, g_personal) = jax.value_and_grad(loss, argnums=(0, 1))(params, personal)
        ascent = lambda grad: jax.tree.map(jnp.negative, grad)   # of the negated loss
        return Direction(ascent(g_params), ascent(g_personal), private, {"loss": value})

    def scores(params, personal, movie, member):
        q = q_values(params, personal, movie, member)
        return q[..., 0] - q[..., 1]   # > 0: recommend

    def evaluate(params, clients, data, hparams, weights):
        global_model = jax.vmap(scores, (None, 0, 0, 0))
        personal_model = jax.vmap(scores, (0, 0, 0, 0))
        part = lambda name: (data.part(name).movie, data.part(name).member)
        personal = clients.personal
        # what an outsider holding only the released global parameters can score: no
        # user's private embedding (zeros), for the membership-inference attacks
        public = jax.tree.map(jnp.zeros_like, personal)
        return {}, {
            "test_score": global_model(params, personal, *part("test")),
            "test_score_personal": personal_model(clients.params, personal, *part("test")),
            "train_score": global_model(params, personal, *part("train")),
            "val_score": global_model(params, personal, *part("val")),
            "train_score_personal": personal_model(clients.params, personal, *part("train")),
            "train_score_public": global_model(params, public, *part("train")),
            "test_score_public": global_model(params, public, *part("test")),
        }

    return Task(init_private, direction, evaluate, client_optimizer, init_personal,
                optax.adam(spec.private_lr)), net


def public_scores(net: QNetwork, inputs: jax.Array, params, movie) -> jax.Array:
    """The recommendation score of each movie from the released global parameters alone, as
    an outsider computes it: no user embedding (zeros) and no action bias. inputs: the
    movies' features (movie_inputs)."""
    q = net.apply(params, movie, inputs[movie], jnp.zeros(net.dim))
    return q[..., 0] - q[..., 1]


def num_params(num_movies: int, inputs_dim: int, spec: ModelSpec) -> int:
    """The QNetwork's parameter count (movie embeddings, hidden and output layers), known
    without building it (a test checks it against flax)."""
    width = 2 * spec.dim + inputs_dim   # [movie embedding, features, user embedding]
    return num_movies * spec.dim + (width + 1) * spec.hidden + (spec.hidden + 1) * 2


def init_params(net: QNetwork, key, inputs_dim: int, dim: int):
    """inputs_dim: ModelSpec.inputs_dim(number of genres)."""
    return net.init(key, jnp.zeros(1, jnp.int32), jnp.zeros((1, inputs_dim)), jnp.zeros(dim))
