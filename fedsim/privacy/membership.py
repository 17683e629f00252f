"""Membership inference on MovieLens: does a model reveal whether a rating was in a user's
training split, and whether a user was a client at all?

Members are a user's training ratings, non-members its held-out test ratings (the same users,
the same movies' distribution, a random 80/20 split per user). Two attacks score each rating:

  loss        minus the model's logistic loss on the rating, log(1 + exp(-y s)) with y = +-1
              the like label and s the model's score (Yeom et al. 2018: members are fitted
              better);
  calibrated  the same minus the user's mean over all its candidate ratings (a per-user
              reference, so that users the model fits well overall are not all called
              members; Watson et al. 2022 calibrate by difficulty the same way).

At the user level (`user_attack_scores`), members are the users who were clients and
non-members users of the same data who never were; each user is scored by the model's mean
loss over all of its ratings (what an attacker holding the user's data computes).

Reported: the AUC of the member / non-member scores (0.5: no leakage) and the TPR at 1% FPR
(the threshold at the non-members' 99th percentile; Carlini et al. 2022's low-FPR view).
"""

from __future__ import annotations

import numpy as np

ATTACKS = ("loss", "calibrated")


def auc(members, nonmembers) -> float:
    """P(a member scores above a non-member), ties counting 1/2 (Mann-Whitney)."""
    from fedsim.movielens.metrics import auc as labelled_auc

    members, nonmembers = np.asarray(members, float), np.asarray(nonmembers, float)
    return labelled_auc(np.concatenate([members, nonmembers]),
                        np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))]))


def tpr_at_fpr(members, nonmembers, fpr: float = 0.01) -> float:
    """The fraction of members scored above the non-members' (1 - fpr) quantile."""
    threshold = np.quantile(np.asarray(nonmembers, float), 1.0 - fpr, method="higher")
    return float(np.mean(np.asarray(members, float) > threshold))


def rating_losses(score, label) -> np.ndarray:
    """The logistic loss of each rating's score (label 1: liked)."""
    sign = 2.0 * np.asarray(label, float) - 1.0
    return np.logaddexp(0.0, -sign * np.asarray(score, float))


def attack_scores(train_score, train_label, train_mask, test_score, test_label, test_mask
                  ) -> dict:
    """{attack: (member scores, non-member scores)} from (K, R) per-client rating arrays."""
    train_mask, test_mask = np.asarray(train_mask) > 0, np.asarray(test_mask) > 0
    member = -rating_losses(train_score, train_label)
    nonmember = -rating_losses(test_score, test_label)
    total = np.where(train_mask, member, 0).sum(1) + np.where(test_mask, nonmember, 0).sum(1)
    mean = total / np.maximum(train_mask.sum(1) + test_mask.sum(1), 1)   # per user
    return {"loss": (member[train_mask], nonmember[test_mask]),
            "calibrated": ((member - mean[:, None])[train_mask],
                           (nonmember - mean[:, None])[test_mask])}


def user_attack_scores(user, movie, loss, member) -> dict:
    """{attack: (member users' scores, non-member users' scores)}: was this user a client at
    all? user, movie, loss: (N,) per rating of every scored user; member: (U,) bool per user
    index (users without ratings are left out).

      loss        minus the user's mean rating loss under the model;
      calibrated  the same after subtracting each movie's mean loss over every scored rating
                  (its difficulty), so that users of easy movies are not all called members.
    """
    user, movie = np.asarray(user), np.asarray(movie)
    loss, member = np.asarray(loss, float), np.asarray(member, bool)
    count = np.bincount(user, minlength=len(member))
    per_user = lambda values: np.bincount(user, values, len(member)) / np.maximum(count, 1)
    difficulty = np.bincount(movie, loss) / np.maximum(np.bincount(movie), 1)
    scored = count > 0
    return {name: (s[member & scored], s[~member & scored]) for name, s in (
        ("loss", -per_user(loss)), ("calibrated", -per_user(loss - difficulty[movie])))}


def evaluate_attacks(scores: dict) -> dict:
    """{attack: {"auc", "tpr_at_1pct_fpr"}} for {attack: (member scores, non-member scores)}
    (`attack_scores`, `user_attack_scores`)."""
    return {name: {"auc": auc(m, n), "tpr_at_1pct_fpr": tpr_at_fpr(m, n)}
            for name, (m, n) in scores.items()}
