"""MovieLens users as FedRLHF clients: ragged per-user data padded and masked, and the
simulated human feedback each client holds (Fan et al. 2025, section 5.1, made consistent).

Feedback, per client k (user u), in the authors' two forms, with a client-specific bias so
that clients differ (a genre taste b_k, in stars):

    noisy biased rating   r~ = rating + taste * b_k . g_m / |g_m| + N(0, noise^2)
    direct                "too low" (+1) if r~ > ref + band, "too high" (-1) if r~ < ref - band,
                          "about right" (0) otherwise; ref is the client's own prediction on the
                          same star scale (its mean training rating). The authors compared a
                          probability in (0, 1) with a 0.5-5 star rating; here both are stars.
    pairwise              for random pairs (i, j) of the client's training movies, whether
                          r~_i > r~_j.

The feedback and the local reward model fitted to it never leave the client.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsim.errors import check_int, check_real, require
from fedsim.movielens.data import Ratings, ratings_by_user

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


def select_users(ratings: Ratings, num_clients: int | None, seed: int) -> np.ndarray:
    """num_clients users drawn without replacement (sorted), or all of them."""
    if num_clients is None:
        return np.arange(ratings.num_users)
    check_int("clients (K)", num_clients, 1, ratings.num_users)
    rng = np.random.default_rng([seed, 1])
    return np.sort(rng.choice(ratings.num_users, num_clients, replace=False))


def _pad(rows: list[np.ndarray], dtype) -> np.ndarray:
    width = max(1, max(len(r) for r in rows))
    out = np.zeros((len(rows), width), dtype)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def make_clients(ratings: Ratings, split: np.ndarray, users: np.ndarray, lam,
                 feedback: FeedbackSpec = FeedbackSpec(), seed: int = 0) -> dict:
    """Client data with a leading client axis: for each part (train, val, test) movie ids,
    labels, ratings and a mask, padded to the longest client; direct feedback per training
    rating; pairwise comparisons; counts; lambda_k. Client k's draws depend on (seed, user)."""
    feedback.validate()
    lam = np.broadcast_to(np.asarray(lam, np.float32), (len(users),))
    require(bool(np.all(lam >= 0)), "lam", lam.tolist(), "must be >= 0")
    G = ratings.genres.shape[1]
    per_genre = ratings.genres / np.maximum(ratings.genres.sum(1, keepdims=True), 1)
    parts = {name: {"movie": [], "label": [], "rating": []} for name in PARTS.values()}
    direct, pairs_i, pairs_j, prefs = [], [], [], []
    by_user = ratings_by_user(ratings)
    for u in users:
        rng = np.random.default_rng([seed, 2, int(u)])
        taste = feedback.taste * rng.normal(size=G)
        for code, name in PARTS.items():
            rows = by_user[u][split[by_user[u]] == code]
            parts[name]["movie"].append(ratings.movie[rows])
            parts[name]["label"].append(ratings.label[rows])
            parts[name]["rating"].append(ratings.rating[rows])
        movies, stars = parts["train"]["movie"][-1], parts["train"]["rating"][-1]
        noisy = stars + per_genre[movies] @ taste + rng.normal(0, feedback.noise, len(movies))
        reference = stars.mean() if len(stars) else 0.0
        direct.append(np.where(noisy > reference + feedback.band, 1.0,
                               np.where(noisy < reference - feedback.band, -1.0, 0.0)))
        n = len(movies)
        i, j = (rng.integers(0, n, feedback.pairs), rng.integers(0, n, feedback.pairs)) if n else (
            np.zeros(0, int), np.zeros(0, int))
        keep = i != j
        pairs_i.append(movies[i[keep]])
        pairs_j.append(movies[j[keep]])
        prefs.append((noisy[i[keep]] > noisy[j[keep]]).astype(np.float32))
    data = {}
    for name, cols in parts.items():
        data[f"{name}_movie"] = _pad(cols["movie"], np.int32)
        data[f"{name}_label"] = _pad(cols["label"], np.float32)
        data[f"{name}_rating"] = _pad(cols["rating"], np.float32)
        data[f"{name}_mask"] = _pad([np.ones(len(m)) for m in cols["movie"]], np.float32)
        data[f"{name}_count"] = np.array([len(m) for m in cols["movie"]], np.float32)
    data["direct"] = _pad(direct, np.float32)
    data["pair_i"], data["pair_j"] = _pad(pairs_i, np.int32), _pad(pairs_j, np.int32)
    data["pair_pref"] = _pad(prefs, np.float32)
    data["pair_mask"] = _pad([np.ones(len(p)) for p in prefs], np.float32)
    data["lam"] = lam.astype(np.float32)
    return data
