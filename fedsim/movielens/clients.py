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


def make_clients(ratings: Ratings, split: np.ndarray, clients, lam,
                 feedback: FeedbackSpec = FeedbackSpec(), seed: int = 0) -> dict:
    """Client data with a leading client axis. `clients`: one user id per client, or a list
    of user-id arrays (group_users). For each part (train, val, test): movie ids, labels,
    ratings, the member (index of the rating's user within its client) and a mask, padded to
    the longest client; direct feedback per training rating; pairwise comparisons (within a
    user); counts; member_mask; lambda_k. A user's draws depend on (seed, user) only."""
    feedback.validate()
    groups = [np.atleast_1d(np.asarray(c)) for c in clients]
    lam = np.broadcast_to(np.asarray(lam, np.float32), (len(groups),))
    require(bool(np.all(lam >= 0)), "lam", lam.tolist(), "must be >= 0")
    G = ratings.genres.shape[1]
    per_genre = ratings.genres / np.maximum(ratings.genres.sum(1, keepdims=True), 1)
    columns = ("movie", "label", "rating", "member", "taste_label")
    parts = {name: {c: [] for c in columns} for name in PARTS.values()}
    direct, pairs_i, pairs_j, prefs = [], [], [], []
    by_user = ratings_by_user(ratings)
    for group in groups:
        held = {name: {c: [] for c in columns} for name in PARTS.values()}
        feedback_of = {"direct": [], "i": [], "j": [], "pref": []}
        for member, u in enumerate(group):
            rng = np.random.default_rng([seed, 2, int(u)])
            taste = feedback.taste * rng.normal(size=G)
            for code, name in PARTS.items():
                rows = by_user[u][split[by_user[u]] == code]
                held[name]["movie"].append(ratings.movie[rows])
                held[name]["label"].append(ratings.label[rows])
                held[name]["rating"].append(ratings.rating[rows])
                held[name]["member"].append(np.full(len(rows), member))
                shifted = ratings.rating[rows] + per_genre[ratings.movie[rows]] @ taste
                held[name]["taste_label"].append((shifted >= POSITIVE_RATING).astype(np.float32))
            movies, stars = held["train"]["movie"][-1], held["train"]["rating"][-1]
            noisy = stars + per_genre[movies] @ taste + rng.normal(0, feedback.noise, len(movies))
            reference = stars.mean() if len(stars) else 0.0
            feedback_of["direct"].append(np.where(
                noisy > reference + feedback.band, 1.0,
                np.where(noisy < reference - feedback.band, -1.0, 0.0)))
            n = len(movies)
            i, j = (rng.integers(0, n, feedback.pairs), rng.integers(0, n, feedback.pairs)) if n \
                else (np.zeros(0, int), np.zeros(0, int))
            keep = i != j
            feedback_of["i"].append(movies[i[keep]])
            feedback_of["j"].append(movies[j[keep]])
            feedback_of["pref"].append((noisy[i[keep]] > noisy[j[keep]]).astype(np.float32))
        for name in PARTS.values():
            for c in columns:
                parts[name][c].append(np.concatenate(held[name][c]))
        direct.append(np.concatenate(feedback_of["direct"]))
        pairs_i.append(np.concatenate(feedback_of["i"]))
        pairs_j.append(np.concatenate(feedback_of["j"]))
        prefs.append(np.concatenate(feedback_of["pref"]))
    data = {}
    for name, cols in parts.items():
        data[f"{name}_movie"] = _pad(cols["movie"], np.int32)
        data[f"{name}_label"] = _pad(cols["label"], np.float32)
        data[f"{name}_rating"] = _pad(cols["rating"], np.float32)
        data[f"{name}_member"] = _pad(cols["member"], np.int32)
        data[f"{name}_taste_label"] = _pad(cols["taste_label"], np.float32)
        data[f"{name}_mask"] = _pad([np.ones(len(m)) for m in cols["movie"]], np.float32)
        data[f"{name}_count"] = np.array([len(m) for m in cols["movie"]], np.float32)
    data["member_mask"] = _pad([np.ones(len(g)) for g in groups], np.float32)
    data["direct"] = _pad(direct, np.float32)
    data["pair_i"], data["pair_j"] = _pad(pairs_i, np.int32), _pad(pairs_j, np.int32)
    data["pair_pref"] = _pad(prefs, np.float32)
    data["pair_mask"] = _pad([np.ones(len(p)) for p in prefs], np.float32)
    data["lam"] = lam.astype(np.float32)
    return data
