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

from dataclasses import dataclass

import numpy as np

from fedsim.errors import check_int, check_real, require
from fedsim.movielens.data import POSITIVE_RATING, Ratings, ratings_by_user

PARTS = {0: "train", 1: "val", 2: "test"}


@dataclass(frozen=True)
class FeedbackSpec:
    noise: float = 0.1   # sigma of the rating noise (the authors' 0.1)
    band: float = 0.5    # half-width of "about right", in stars (the authors' 0.5)
    taste: float = 1.0   # scale of the client-specific genre bias, in stars
    pairs: int = 64      # pairwise comparisons per client

    def validate(self) -> "FeedbackSpec":
        check_real("noise", self.noise, 0.0)
        check_real("band", self.band, 0.0)
        check_real("taste", self.taste, 0.0)
        check_int("pairs", self.pairs, 1)
        return self


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
        out[name] = {"movie": ratings.movie[rows], "label": ratings.label[rows],
                     "rating": ratings.rating[rows]}
    test = out["test"]
    test["taste_label"] = (test["rating"] + per_genre[test["movie"]] @ taste
                           >= POSITIVE_RATING).astype(np.float32)
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


def make_clients(ratings: Ratings, split: np.ndarray, clients, lam,
                 feedback: FeedbackSpec = FeedbackSpec(), seed: int = 0) -> dict:
    """Client data with a leading client axis. `clients`: one user id per client, or a list
    of user-id arrays (group_users). For each part (train, val, test): movie ids, labels,
    ratings, the member (index of the rating's user within its client) and a mask, padded to
    the longest client; test taste labels; direct feedback per training rating; pairwise
    comparisons (within a user); counts; member_mask; lambda_k. A user's draws depend on
    (seed, user) only, whichever client holds it."""
    feedback.validate()
    groups = [np.atleast_1d(np.asarray(c)) for c in clients]
    lam = np.broadcast_to(np.asarray(lam, np.float32), (len(groups),))
    require(bool(np.all(lam >= 0)), "lam", lam.tolist(), "must be >= 0")
    per_genre = ratings.genres / np.maximum(ratings.genres.sum(1, keepdims=True), 1)
    by_user = ratings_by_user(ratings)
    columns = {name: ["movie", "label", "rating"] for name in PARTS.values()}
    columns["test"].append("taste_label")
    held = {(name, c): [] for name, cs in columns.items() for c in cs + ["member"]}
    held.update({(c, None): [] for c in ("direct", "pair_i", "pair_j", "pair_pref")})
    for group in groups:
        users = [_user_data(ratings, split, by_user[u], u, per_genre, feedback, seed)
                 for u in group]
        for (name, c), out in held.items():
            if c is None:
                out.append(np.concatenate([d[name] for d in users]))
            elif c == "member":
                out.append(np.concatenate([np.full(len(d[name]["movie"]), m)
                                           for m, d in enumerate(users)]))
            else:
                out.append(np.concatenate([d[name][c] for d in users]))
    data = {}
    for (name, c), values in held.items():
        field = name if c is None else c
        data[name if c is None else f"{name}_{c}"] = _pad(
            values, np.int32 if field in ("movie", "member", "pair_i", "pair_j") else np.float32)
    for name in PARTS.values():
        data[f"{name}_mask"] = _pad([np.ones(len(m)) for m in held[(name, "movie")]], np.float32)
        data[f"{name}_count"] = np.array([len(m) for m in held[(name, "movie")]], np.float32)
    data["member_mask"] = _pad([np.ones(len(g)) for g in groups], np.float32)
    data["pair_mask"] = _pad([np.ones(len(p)) for p in held[("pair_pref", None)]], np.float32)
    data["lam"] = lam.astype(np.float32)
    return data
