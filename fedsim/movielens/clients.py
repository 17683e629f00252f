"""MovieLens users as FedRLHF clients, one user or a group of users each: ragged per-client
data padded and masked, and the simulated human feedback each client holds (Fan et al. 2025,
section 5.1, made consistent).

Feedback, per user u of client k, in the authors' two forms, with a user-specific bias so
that clients differ (a genre taste b_u, in stars):

    noisy biased rating   r~ = rating + taste * b_k . g_m / |g_m| + N(0, noise^2)
    direct                "too low" (+1) if r~ > ref + band, "too high" (-1) if r~ < ref - band,
                          "about right" (0) otherwise; ref is the client's own prediction on the
                          same star scale (the user's mean training rating). The authors compared a
                          probability in (0, 1) with a 0.5-5 star rating; here both are stars.
    pairwise              for random pairs (i, j) of the user's training movies, whether
                          r~_i > r~_j.

The feedback and the local reward model fitted to it never leave the client. For measuring
personalisation, each test rating also gets the user's taste label: whether
rating + taste * b_u . g_m / |g_m| >= 4, what the user's biased feedback would call a
recommendation (noise-free); the plain label is the rating alone. A client that
holds a group of users (a household, a clinic's patients) pools its users' feedback into one
reward model and keeps one personal embedding per user; `member` arrays say whose each
rating is.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fedsim.errors import check_int
from fedsim.movielens.config import FeedbackSpec
from fedsim.movielens.data import POSITIVE_RATING, Ratings, ratings_by_user

PARTS = {0: "train", 1: "val", 2: "test"}


class Part(NamedTuple):
    """One part (train, val or test) of the ratings each client holds: (K, n) arrays padded
    to the longest client, and counts (K,)."""

    movie: np.ndarray         # movie ids
    label: np.ndarray         # 1 if the rating is >= 4
    rating: np.ndarray        # stars
    taste_label: np.ndarray   # the user's taste-biased label (see the module docstring)
    member: np.ndarray        # the rating's user, as an index among its client's users
    mask: np.ndarray          # 1 for a rating, 0 for padding
    count: np.ndarray         # (K,) ratings per client


class Feedback(NamedTuple):
    """The simulated feedback each client holds (on its training ratings)."""

    direct: np.ndarray        # (K, n_train): +1 "too low", -1 "too high", 0 "about right"
    pair_i: np.ndarray        # (K, p) movie ids of the pairwise comparisons ...
    pair_j: np.ndarray
    pair_pref: np.ndarray     # ... 1 where the client prefers i over j
    pair_mask: np.ndarray     # 1 for a comparison, 0 for padding


class ClientData(NamedTuple):
    """Every client's data, with a leading client axis K (what the engine maps over)."""

    train: Part
    val: Part
    test: Part
    feedback: Feedback
    member_mask: np.ndarray   # (K, users per client): 1 for a user, 0 for padding

    def part(self, name: str) -> Part:
        return getattr(self, name)


def select_users(ratings: Ratings, num_clients: int | None, seed: int,
                 users_per_client: int = 1) -> np.ndarray:
    """num_clients * users_per_client users drawn without replacement (sorted), or all."""
    check_int("users_per_client", users_per_client, 1, ratings.num_users)
    if num_clients is None:
        return np.arange(ratings.num_users)
    check_int("clients (K)", num_clients, 1, ratings.num_users // users_per_client)
    rng = np.random.default_rng([seed, 1])
    return np.sort(rng.choice(ratings.num_users, num_clients * users_per_client, replace=False))


def group_users(users: np.ndarray, users_per_client: int, seed: int) -> list[np.ndarray]:
    """The users dealt into clients of users_per_client each (a seeded shuffle, each group
    sorted; the last is smaller when they do not divide evenly). 1: one user per client, in
    order."""
    check_int("users_per_client", users_per_client, 1)
    users = np.asarray(users)
    if users_per_client > 1:
        users = np.random.default_rng([seed, 3]).permutation(users)
    return [np.sort(users[i:i + users_per_client]) for i in range(0, len(users), users_per_client)]


def _pad(rows: list[np.ndarray], dtype) -> np.ndarray:
    width = max(1, max(len(r) for r in rows))
    out = np.zeros((len(rows), width), dtype)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def _user_data(ratings: Ratings, split: np.ndarray, rows_of_user: np.ndarray, user: int,
               per_genre: np.ndarray, feedback: FeedbackSpec, seed: int) -> dict:
    """One user's ratings by part and its simulated feedback; draws depend on (seed, user)."""
    rng = np.random.default_rng([seed, 2, int(user)])
    taste = feedback.taste * rng.normal(size=per_genre.shape[1])
    out = {}
    for code, name in PARTS.items():
        rows = rows_of_user[split[rows_of_user] == code]
        movie, rating = ratings.movie[rows], ratings.rating[rows]
        out[name] = {"movie": movie, "label": ratings.label[rows], "rating": rating,
                     "taste_label": (rating + per_genre[movie] @ taste
                                     >= POSITIVE_RATING).astype(np.float32)}
    movies, stars = out["train"]["movie"], out["train"]["rating"]
    noisy = stars + per_genre[movies] @ taste + rng.normal(0, feedback.noise, len(movies))
    reference = stars.mean() if len(stars) else 0.0
    out["direct"] = np.where(noisy > reference + feedback.band, 1.0,
                             np.where(noisy < reference - feedback.band, -1.0, 0.0))
    n = len(movies)
    i, j = (rng.integers(0, n, feedback.pairs), rng.integers(0, n, feedback.pairs)) if n else (
        np.zeros(0, int), np.zeros(0, int))
    keep = i != j
    out["pair_i"], out["pair_j"] = movies[i[keep]], movies[j[keep]]
    out["pair_pref"] = (noisy[i[keep]] > noisy[j[keep]]).astype(np.float32)
    return out


_INTEGER = ("movie", "member", "pair_i", "pair_j")


def make_clients(ratings: Ratings, split: np.ndarray, clients,
                 feedback: FeedbackSpec = FeedbackSpec(), seed: int = 0) -> ClientData:
    """Client data with a leading client axis. `clients`: one user id per client, or a list
    of user-id arrays (group_users). A user's draws depend on (seed, user) only, whichever
    client holds it."""
    feedback.validate()
    groups = [np.atleast_1d(np.asarray(c)) for c in clients]
    per_genre = ratings.genres / np.maximum(ratings.genres.sum(1, keepdims=True), 1)
    by_user = ratings_by_user(ratings)
    users = [[_user_data(ratings, split, by_user[u], u, per_genre, feedback, seed)
              for u in group] for group in groups]

    def pad(name, rows):
        return _pad(rows, np.int32 if name in _INTEGER else np.float32)

    def part(name):
        columns = {c: pad(c, [np.concatenate([d[name][c] for d in us]) for us in users])
                   for c in ("movie", "label", "rating", "taste_label")}
        members = [np.concatenate([np.full(len(d[name]["movie"]), m) for m, d in enumerate(us)])
                   for us in users]
        lengths = [len(m) for m in members]
        return Part(**columns, member=pad("member", members),
                    mask=_pad([np.ones(n) for n in lengths], np.float32),
                    count=np.array(lengths, np.float32))

    joined = {c: [np.concatenate([d[c] for d in us]) for us in users]
              for c in ("direct", "pair_i", "pair_j", "pair_pref")}
    return ClientData(
        *(part(name) for name in PARTS.values()),
        Feedback(**{c: pad(c, rows) for c, rows in joined.items()},
                 pair_mask=_pad([np.ones(len(p)) for p in joined["pair_pref"]], np.float32)),
        member_mask=_pad([np.ones(len(g)) for g in groups], np.float32))
