"""MovieLens: loading and verification, splits, client packing and feedback, metrics, the
task against a plain reference step, and end-to-end runs on synthetic data (plus one on the
real zip when ../shared/data has it)."""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedsim.cli import main
from fedsim.movielens import data as D
from fedsim.movielens import experiment
from fedsim.movielens.clients import group_users, make_clients, select_users
from fedsim.movielens.config import FeedbackSpec
from fedsim.movielens.experiment import run_movielens, user_majority_accuracy
from fedsim.movielens.config import MovieLensRunConfig
from fedsim.movielens.metrics import auc, average_ranks, evaluate_scores, row_spearman, spearman
from fedsim.movielens.task import fit_reward_model, movie_inputs, reward_features
from fedsim.movielens.config import ModelSpec

REAL = D.PROJECT_ROOT.parent / "shared" / "data" / "ml-latest-small.zip"


def _write_folder(ratings: D.Ratings, folder: Path) -> Path:
    folder.mkdir(parents=True)
    lines = ["userId,movieId,rating,timestamp"] + [
        f"{u + 1},{m + 1},{r},0" for u, m, r in zip(ratings.user, ratings.movie, ratings.rating)]
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
    movies = ["movieId,title,genres"] + [
        f"{m + 1},Movie {m} ({ratings.year[m]:.0f}),"
        f"{'|'.join(n for n, g in zip(ratings.genre_names, row) if g)}"
        for m, row in enumerate(ratings.genres)]
    (folder / "movies.csv").write_text("\n".join(movies) + "\n")
    return folder


def test_folder_round_trip_and_locate_order(tmp_path, monkeypatch):
    synth = D.synthetic(num_users=5, num_movies=30, seed=1)
    folder = _write_folder(synth, tmp_path / "ml-latest-small")
    loaded = D.load(folder)
    np.testing.assert_array_equal(loaded.rating, synth.rating)
    np.testing.assert_array_equal(loaded.user, synth.user)
    # Movies are renumbered over rated movies only; their genres follow them.
    rated = np.unique(synth.movie)
    np.testing.assert_array_equal(loaded.genres, synth.genres[rated])
    np.testing.assert_array_equal(loaded.year, synth.year[rated])
    monkeypatch.setenv("FEDSIM_DATA", str(tmp_path))
    assert D.locate() == folder                       # $FEDSIM_DATA/ml-latest-small
    assert D.locate(folder) == folder                 # an explicit path comes first


def _write_release_zip(ratings: D.Ratings, path: Path, name: str) -> None:
    """`ratings` in the files and formats of GroupLens's ml-100k or ml-1m release."""
    genre_of = lambda row: [n for n, g in zip(ratings.genre_names, row) if g]
    triples = list(zip(ratings.user + 1, ratings.movie + 1, ratings.rating))
    with zipfile.ZipFile(path, "w") as z:
        if name == "ml-100k":
            z.writestr("ml-100k/u.data", "".join(f"{u}\t{m}\t{int(r)}\t0\n" for u, m, r in triples))
            # Odd movies carry the year only in the release date, as some of ml-100k's do.
            z.writestr("ml-100k/u.item", "".join(
                f"{m + 1}|Café {m}{'' if m % 2 else f' ({ratings.year[m]:.0f})'}|"
                f"01-Jan-{ratings.year[m]:.0f}||http://x|"
                + "|".join("1" if g in genre_of(row) else "0" for g in D.GENRES_100K) + "\n"
                for m, row in enumerate(ratings.genres)).encode("latin-1"))
        else:
            z.writestr("ml-1m/ratings.dat", "".join(f"{u}::{m}::{int(r)}::0\n" for u, m, r in triples))
            z.writestr("ml-1m/movies.dat", "".join(
                f"{m + 1}::Café {m} ({ratings.year[m]:.0f})::{'|'.join(genre_of(row))}\n"
                for m, row in enumerate(ratings.genres)).encode("latin-1"))


@pytest.mark.parametrize("name", ["ml-100k", "ml-1m"])
def test_older_releases_load_from_their_own_formats(tmp_path, monkeypatch, name):
    """ml-100k (tab and pipe separated, 19 genre flags) and ml-1m ("::" separated), Latin-1,
    written from a synthetic set with integer stars and the releases' genre names; the
    checksum is that of the zip written here (the published one is checked in real use)."""
    synth = D.synthetic(num_users=6, num_movies=40, num_genres=5, seed=2)
    names = D.GENRES_100K[1:6]
    synth = D.Ratings(synth.user, synth.movie, np.ceil(synth.rating), synth.genres, names, "s",
                      synth.year)
    path = tmp_path / f"{name}.zip"
    _write_release_zip(synth, path, name)
    with pytest.raises(D.DataError, match="md5 .* expected"):
        D.load(path, name)
    monkeypatch.setitem(D.DATASETS, name, {**D.DATASETS[name], "md5": D.file_digest(path, "md5")})
    monkeypatch.setenv("FEDSIM_DATA", str(tmp_path))
    loaded = D.load(D.locate(None, name), name)
    np.testing.assert_array_equal(loaded.user, synth.user)
    np.testing.assert_array_equal(loaded.rating, synth.rating)
    np.testing.assert_array_equal(loaded.movie, np.searchsorted(np.unique(synth.movie), synth.movie))
    np.testing.assert_array_equal(loaded.genres, synth.genres[np.unique(synth.movie)])
    np.testing.assert_array_equal(loaded.year, synth.year[np.unique(synth.movie)])
    assert loaded.genre_names == tuple(sorted(names))


def test_release_years_come_from_titles():
    assert D.title_year("Heat (1995)") == 1995
    assert D.title_year("Seven (a.k.a. Se7en) (1995) ") == 1995
    assert D.title_year("Band of Brothers (2001–2001)") == 2001   # an en dash, as in the data
    assert D.title_year("Stranger Things (2016-)") == 2016
    assert np.isnan(D.title_year("Hyena Road"))
    assert np.isnan(D.title_year("1984"))


def test_year_input_is_standardised_and_needs_years():
    genres = np.eye(3, dtype=np.float32)
    year = np.array([1990.0, np.nan, 2010.0], np.float32)
    np.testing.assert_array_equal(movie_inputs(genres, year, ModelSpec()), genres)
    table = movie_inputs(genres, year, ModelSpec(year=True))
    assert table.shape == (3, ModelSpec(year=True).inputs_dim(3)) == (3, 4)
    np.testing.assert_allclose(table[:, 3], [-1.0, 0.0, 1.0])   # unknown: the mean
    with pytest.raises(ValueError, match="year = True.*no movie titles"):
        movie_inputs(genres, None, ModelSpec(year=True))


def test_datasets_library_table_loads_like_the_csv(tmp_path):
    """The --hub path on a folder saved by the datasets library (no network): MovieLens
    column names with "A|B" genres, and snake_case names with genre lists, both load; a table
    without a genres column is refused naming what it has."""
    import datasets

    synth = D.synthetic(num_users=5, num_movies=30, seed=1)
    genres = ["|".join(n for n, g in zip(synth.genre_names, synth.genres[m]) if g)
              for m in synth.movie]
    columns = {"userId": synth.user + 1, "movieId": synth.movie + 1, "rating": synth.rating,
               "genres": genres, "title": [f"M ({synth.year[m]:.0f})" for m in synth.movie]}
    datasets.Dataset.from_dict(columns).save_to_disk(tmp_path / "camel")
    snake = {"user_id": columns["userId"], "item_id": columns["movieId"],
             "rating": columns["rating"], "genres": [g.split("|") for g in genres]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(snake)}).save_to_disk(
        tmp_path / "snake")
    from_csv = D.load(_write_folder(synth, tmp_path / "csv"))
    for name in ("camel", "snake"):
        loaded = D.load_hub(str(tmp_path / name))
        for field in ("user", "movie", "rating", "genres"):
            np.testing.assert_array_equal(getattr(loaded, field), getattr(from_csv, field))
        if name == "camel":   # the table with titles
            np.testing.assert_array_equal(loaded.year, from_csv.year)
        else:
            assert loaded.year is None
        assert loaded.genre_names == from_csv.genre_names
    assert main(["run", "movielens", "--hub", str(tmp_path / "camel"), "--clients", "3",
                 "--rounds", "1", "--local-epochs", "1", "--num-seeds", "1", "--algorithm",
                 "fedavg", "--dim", "4", "--hidden", "8", "--out", str(tmp_path / "run"),
                 "--quiet"]) == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["source"].startswith("hub:")
    datasets.Dataset.from_dict({"userId": [1], "movieId": [1], "rating": [4.0]}).save_to_disk(
        tmp_path / "bare")
    with pytest.raises(D.DataError, match="columns .*userId.* needs a genres column"):
        D.load_hub(str(tmp_path / "bare"))


def test_missing_data_says_where_it_looked_and_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDSIM_DATA", str(tmp_path / "nothing"))
    monkeypatch.setattr(D, "PROJECT_ROOT", tmp_path / "project")
    with pytest.raises(D.DataError, match="not found .*looked at.*nothing.*grouplens.*--data"):
        D.locate()


def test_corrupt_zip_is_refused(tmp_path):
    bad = tmp_path / "ml-latest-small.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("ml-latest-small/ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,0\n")
    with pytest.raises(D.DataError, match="sha256 .* expected"):
        D.load(bad)


def test_cli_reports_missing_and_corrupt_data_with_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FEDSIM_DATA", str(tmp_path / "nothing"))
    monkeypatch.setattr(D, "PROJECT_ROOT", tmp_path / "project")
    with pytest.raises(SystemExit) as stop:
        main(["run", "movielens", "--out", str(tmp_path / "o"), "--quiet"])
    assert stop.value.code == 2 and "not found" in capsys.readouterr().err
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(SystemExit) as stop:
        main(["run", "movielens", "--data", str(bad), "--out", str(tmp_path / "o"), "--quiet"])
    assert stop.value.code == 2 and "sha256" in capsys.readouterr().err


def test_split_is_per_user_and_seeded():
    r = D.synthetic(num_users=20, seed=3)
    split = D.split_per_user(r, seed=5)
    assert np.array_equal(split, D.split_per_user(r, seed=5))
    for u in range(r.num_users):
        mine = split[r.user == u]
        n = len(mine)
        assert abs((mine == 0).sum() - 0.7 * n) <= 1 and abs((mine == 2).sum() - 0.2 * n) <= 1


def test_clients_are_padded_masked_and_independent_of_the_others():
    r = D.synthetic(num_users=12, seed=4)
    split = D.split_per_user(r)
    users = select_users(r, 5, seed=0)
    c = make_clients(r, split, users, FeedbackSpec(pairs=16), seed=0)
    for k, u in enumerate(users):
        n = int(c.train.count[k])
        assert c.train.mask[k, :n].all() and not c.train.mask[k, n:].any()
        expected = np.sort(r.movie[(r.user == u) & (split == 0)])
        np.testing.assert_array_equal(np.sort(c.train.movie[k, :n]), expected)
        assert set(np.unique(c.feedback.direct[k, :n])) <= {-1.0, 0.0, 1.0}
    # Taste labels: the plain labels when clients have no taste, and not otherwise.
    plain = make_clients(r, split, users, FeedbackSpec(taste=0.0, pairs=16), seed=0)
    np.testing.assert_array_equal(plain.test.taste_label, plain.test.label)
    assert ((c.test.taste_label != c.test.label) * c.test.mask).any()
    # Client k's feedback depends only on (seed, user): another selection leaves it unchanged.
    other = make_clients(r, split, users[1:], FeedbackSpec(pairs=16), seed=0)
    direct = other.feedback.direct
    np.testing.assert_array_equal(direct[0], c.feedback.direct[1][:direct.shape[1]])


def test_groups_deal_every_user_once_and_hold_their_members_data():
    r = D.synthetic(num_users=11, seed=4)
    split = D.split_per_user(r)
    groups = group_users(select_users(r, None, 0, 3), 3, seed=5)
    assert [len(g) for g in groups] == [3, 3, 3, 2]
    np.testing.assert_array_equal(np.sort(np.concatenate(groups)), np.arange(11))
    assert [list(g) for g in group_users(np.arange(11), 3, 5)] == [list(g) for g in groups]
    assert len(select_users(r, 2, 0, 3)) == 6
    grouped = make_clients(r, split, groups, FeedbackSpec(pairs=8), seed=1)
    single = make_clients(r, split, np.concatenate(groups), FeedbackSpec(pairs=8), seed=1)
    np.testing.assert_array_equal(grouped.member_mask[3], [1, 1, 0])
    u = 0
    for k, group in enumerate(groups):
        for member in range(len(group)):
            for part in ("train", "test"):
                g, one = grouped.part(part), single.part(part)
                mine = (g.member[k] == member) & (g.mask[k] > 0)
                n = int(one.count[u])
                np.testing.assert_array_equal(g.movie[k][mine], one.movie[u, :n])
            # A user's feedback is its own whether it is alone or in a group.
            mine = (grouped.train.member[k] == member) & (grouped.train.mask[k] > 0)
            n = int(single.train.count[u])
            np.testing.assert_array_equal(grouped.feedback.direct[k][mine],
                                          single.feedback.direct[u, :n])
            u += 1
    assert grouped.feedback.pair_mask[0].sum() == single.feedback.pair_mask[:3].sum()


def test_reward_model_recovers_a_planted_taste():
    """Feedback generated from a known genre taste: the fitted reward ranks genres like it."""
    r = D.synthetic(num_users=1, num_movies=200, num_genres=6, ratings_per_user=(150, 150), seed=7)
    split = np.zeros(len(r.user), np.int8)
    c = make_clients(r, split, np.array([0]), FeedbackSpec(taste=3.0, pairs=400), seed=2)
    data = jax.tree.map(lambda v: jnp.asarray(v[0]), c)
    w = fit_reward_model(data, reward_features(r.genres), ModelSpec(reward_steps=500))
    taste = 3.0 * np.random.default_rng([2, 2, 0]).normal(size=6)
    assert spearman(np.asarray(w[:6]), taste) > 0.8


def test_metrics_match_definitions():
    rng = np.random.default_rng(0)
    s, y = rng.normal(size=300), rng.integers(0, 2, 300).astype(float)
    pairs = np.mean([(a > b) + 0.5 * (a == b) for a in s[y == 1] for b in s[y == 0]])
    assert abs(auc(s, y) - pairs) < 1e-12
    assert auc(np.round(s), y) == pytest.approx(np.mean(
        [(a > b) + 0.5 * (a == b) for a in np.round(s[y == 1]) for b in np.round(s[y == 0])]))
    np.testing.assert_allclose(average_ranks([3, 1, 3, 2]), [2.5, 0, 2.5, 1])
    assert np.isnan(spearman([1, 2, 3], [1, 1, 1]))
    out = evaluate_scores(np.array([[1.0, -1, 5], [2, 2, 0]]), np.array([[1.0, 0, 0], [0, 1, 1]]),
                          np.array([[1.0, 1, 0], [1, 1, 1]]))
    assert out["accuracy"] == pytest.approx(3 / 5)
    np.testing.assert_allclose(out["client_accuracy"], [1.0, 1 / 3])


def test_row_spearman_equals_the_per_client_loop():
    """The vectorized per-client Spearman against spearman() row by row, with ties (rounded
    scores, binary labels), ragged masks, a constant row and rows of 0 and 1 entries."""
    rng = np.random.default_rng(3)
    scores = np.round(rng.normal(size=(40, 30)), 1)
    labels = rng.integers(0, 2, (40, 30)).astype(float)
    keep = np.arange(30)[None, :] < rng.integers(0, 31, 40)[:, None]
    keep[0], keep[1], keep[2, :5] = False, False, True
    keep[1, 0] = True
    labels[3] = 1.0
    got = row_spearman(scores, labels, keep)
    want = [spearman(s[k], y[k]) if k.sum() else np.nan for s, y, k in zip(scores, labels, keep)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert np.isnan(got[[0, 1, 3]]).all() and np.isfinite(got[2])


def test_user_majority_baseline():
    from fedsim.movielens.clients import ClientData, Part

    def clients(train_label, train_mask, train_member, test_label, test_mask, test_member,
                members):
        part = lambda label, mask, member: Part(None, np.array(label), None, None,
                                                np.array(member), np.array(mask), None)
        return ClientData(part(train_label, train_mask, train_member), None,
                          part(test_label, test_mask, test_member), None, np.ones(members))

    two = clients([[1.0, 1, 0], [0, 0, 0]], [[1.0, 1, 1], [1, 1, 0]], np.zeros((2, 3), int),
                  [[1.0, 0], [0, 1]], [[1.0, 1], [1, 0]], np.zeros((2, 2), int), (2, 1))
    # user 0: majority positive, right on 1 of 2; user 1: majority negative, right on 1 of 1
    assert user_majority_accuracy(two) == pytest.approx(2 / 3)
    # The same two users as one client of two members: still each user's own majority.
    group = clients([[1.0, 1, 0, 0, 0]], np.ones((1, 5)), [[0, 0, 0, 1, 1]], [[1.0, 0, 0]],
                    np.ones((1, 3)), [[0, 0, 1]], (1, 2))
    assert user_majority_accuracy(group) == pytest.approx(2 / 3)


def _synthetic_config(**kw):
    base = dict(dataset="synthetic", clients=8, rounds=3, local_epochs=1, num_seeds=2,
                model=ModelSpec(dim=4, hidden=8, batch=8, reward_steps=20))
    return MovieLensRunConfig(**{**base, **kw})


def test_run_writes_results_and_is_deterministic(tmp_path):
    a = run_movielens(_synthetic_config(), tmp_path / "a", progress=False)
    run_movielens(_synthetic_config(), tmp_path / "b", progress=False)
    for name in ("metrics.csv", "clients.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert [r["algorithm"] for r in summary["results"]] == ["fedavg", "centralized", "local"]
    rows = a["rows"]
    assert {r["split"] for r in rows} == {"test", "test_personal", "taste", "taste_personal",
                                          "train", "val"}
    assert len(rows) == 3 * 2 * 3 * 6   # algorithms x seeds x rounds x splits
    assert 0 <= summary["user_majority_test_accuracy"] <= 1
    # Validation-selected test accuracy: the test figure at each seed's best validation round.
    fed = summary["results"][0]

    def accuracy(seed, t, split):
        return next(r["accuracy"] for r in rows if (r["algorithm"], r["seed"], r["round"],
                                                    r["split"]) == ("fedavg", seed, t, split))

    picked = []
    for seed, t in enumerate(fed["val_selected"]["rounds"]):
        assert accuracy(seed, t, "val") == max(accuracy(seed, u, "val") for u in (1, 2, 3))
        picked.append(accuracy(seed, t, "test"))
    assert fed["val_selected"]["test_accuracy"][0] == pytest.approx(np.mean(picked))
    from figures import make_figures

    written = make_figures(tmp_path / "a", tmp_path / "figures")
    assert [p.name for p in written] == ["movielens.png", "movielens.pdf"]
    assert all(p.stat().st_size > 1000 for p in written)


def test_several_lambdas_in_one_run_equal_separate_runs(tmp_path):
    """One compilation serves every lambda: its rows equal those of one run per lambda, and
    the figure gains the trade-off panel."""
    config = lambda lam: _synthetic_config(lam=lam, num_seeds=1, algorithms=("fedavg",))
    both = run_movielens(config((0.0, 2.0)), tmp_path / "both", progress=False)
    assert [r["lam"] for r in both["summary"]["results"]] == [0.0, 2.0]
    for lam in (0.0, 2.0):
        alone = run_movielens(config(lam), progress=False)["rows"]
        mine = [{k: v for k, v in r.items()} for r in both["rows"] if r["lam"] == lam]
        assert mine == alone
    # Heavier feedback follows the clients' tastes more (the synthetic taste is 1 star).
    taste = [r["taste"]["accuracy"][0] for r in both["summary"]["results"]]
    assert taste[1] > taste[0]
    from figures import make_figures

    written = make_figures(tmp_path / "both", tmp_path / "figures")
    assert [p.name for p in written] == ["movielens.png", "movielens.pdf"]


@pytest.mark.parametrize("update,gamma", [("fitted_q", 0.0), ("soft_q", 0.0),
                                          ("policy_gradient", 0.0), ("fitted_q", 0.99)])
def test_learning_beats_chance_on_synthetic_data(update, gamma):
    config = _synthetic_config(clients=30, rounds=15, local_epochs=2, num_seeds=1,
                               algorithms=("fedavg",), lr=0.03,
                               model=ModelSpec(dim=8, hidden=16, batch=16, reward_steps=20,
                                               update=update, gamma=gamma))
    s = run_movielens(config, progress=False)["summary"]
    final = s["results"][0]["test"]
    assert final["auc"][0] > 0.6   # the planted structure is learnable


def test_year_input_learns_a_planted_year_effect(monkeypatch):
    """Ratings decided by the release year alone, over 3000 movies rated about once each
    (their embeddings learn little; genres are unrelated): with --year the model reads the
    effect, without it learns far less. Runs with the cosine schedule."""
    synth = D.synthetic(num_users=30, num_movies=3000, seed=3)
    stars = np.where(synth.year[synth.movie] >= 1975, 4.5, 2.0).astype(np.float32)
    monkeypatch.setattr(experiment, "load_ratings",
                        lambda config: dataclasses.replace(synth, rating=stars))
    accuracy = {}
    for year in (False, True):
        config = _synthetic_config(clients=30, rounds=10, local_epochs=2, num_seeds=1, lr=0.03,
                                   schedule="cosine", algorithms=("fedavg",),
                                   model=ModelSpec(dim=4, hidden=16, batch=16, reward_steps=20,
                                                   year=year))
        accuracy[year] = run_movielens(config, progress=False)["summary"]["results"][0]["test"][
            "accuracy"][0]
    assert accuracy[True] > 0.9 and accuracy[True] > accuracy[False] + 0.2, accuracy   # 0.98, 0.69


def test_groups_of_users_as_clients_run_with_a_personal_embedding_per_user():
    config = _synthetic_config(clients=4, users_per_client=3, num_seeds=1, algorithms=("fedavg",))
    out = run_movielens(config, progress=False)
    assert out["summary"]["clients"] == 4 and out["summary"]["users"] == 12
    assert {len(r["users"].split()) for r in out["client_rows"]} == {3}
    from fedsim.engine import Federation, make_trainer
    from fedsim.movielens.task import MovieLensHParams, init_params, make_task

    r = D.synthetic(num_users=6, seed=2)
    c = make_clients(r, D.split_per_user(r), group_users(np.arange(6), 3, 0))
    spec = ModelSpec(dim=4, hidden=8, batch=4, reward_steps=5)
    task, net = make_task(r.num_movies, r.genres, spec)
    data = jax.tree.map(jnp.asarray, c)
    params0 = init_params(net, jax.random.key(0), r.genres.shape[1], spec.dim)
    fed = Federation("fedavg", 2)
    state = make_trainer(task, fed.algorithm_parts(), fed).init(params0, data, jax.random.key(1))
    assert state.clients.personal.user.shape == (2, 3, 4)
    _, scores = task.evaluate(params0, state.clients, data,
                              MovieLensHParams(jnp.full(2, 0.5)), jnp.full(2, 0.5))
    assert scores["test_score"].shape == c.test.movie.shape


def test_shared_parameters_are_all_that_is_aggregated():
    """Personal parameters and the reward model stay per client; only the flax parameters
    (movie embeddings and MLP) are averaged."""
    from fedsim.engine import Federation, HParams, every_round, make_train
    from fedsim.movielens.task import MovieLensHParams, init_params, make_task

    r = D.synthetic(num_users=6, seed=2)
    c = make_clients(r, D.split_per_user(r), np.arange(6), FeedbackSpec(pairs=8))
    data = jax.tree.map(jnp.asarray, c)
    spec = ModelSpec(dim=4, hidden=8, batch=4, reward_steps=5)
    task, net = make_task(r.num_movies, r.genres, spec)
    fed = Federation("fedavg", 2)
    params0 = init_params(net, jax.random.key(0), r.genres.shape[1], spec.dim)
    state, metrics = jax.jit(make_train(task, fed.algorithm_parts(), fed))(
        params0, data, jnp.full(6, 1 / 6), HParams(MovieLensHParams(jnp.full(6, 0.5))),
        jax.random.key(1), jnp.full((2, 2), 0.01), every_round(2))
    assert jax.tree.structure(state.params) == jax.tree.structure(params0)
    clients = state.clients
    assert clients.personal.user.shape == (6, 1, 4) and clients.private.reward.shape[0] == 6
    users = np.asarray(clients.personal.user)
    assert not np.allclose(users[0], users[1])
    # The optimisers' moments live in the engine's client state, per client (Adam on the MLP).
    moments = jax.tree.leaves(clients.opt_state)
    assert moments and all(m.shape[0] == 6 for m in moments)
    assert metrics.aux["loss"].shape == (2,) and np.all(np.isfinite(metrics.aux["loss"]))


@pytest.mark.skipif(not REAL.exists(), reason=f"{REAL} not present (the shared data folder)")
def test_real_movielens_zip_loads_and_trains():
    r = D.load(REAL)
    assert (r.num_users, len(r.user)) == (610, 100836)
    assert abs(r.label.mean() - 0.482) < 1e-3
    config = MovieLensRunConfig(clients=10, rounds=2, local_epochs=1, num_seeds=1,
                                algorithms=("fedavg",))
    s = run_movielens(config, progress=False)["summary"]
    assert s["clients"] == 10 and 0.3 < s["results"][0]["test"]["accuracy"][0] < 1


@pytest.mark.parametrize("flag,value,named", [("--lam", "-1", "--lam = -1.0"),
                                              ("--rounds", "0", "--rounds (T) = 0"),
                                              ("--clients", "0", "--clients (K) = 0"),
                                              ("--lr", "0", "--lr = 0.0"),
                                              ("--pairs", "0", "--pairs = 0"),
                                              ("--gamma", "1", "--gamma = 1.0"),
                                              ("--temperature", "0", "--temperature = 0.0"),
                                              ("--schedule", "linear", "--schedule"),
                                              ("--users-per-client", "0",
                                               "--users-per-client = 0")])
def test_bad_movielens_input_is_named_before_anything_runs(flag, value, named, tmp_path, capsys,
                                                           monkeypatch):
    monkeypatch.setattr(jax, "jit", lambda *a, **k: pytest.fail("compiled before validating"))
    with pytest.raises(SystemExit) as stop:
        main(["run", "movielens", "--dataset", "synthetic", flag, value, "--out",
              str(tmp_path / "o"), "--quiet"])
    assert stop.value.code == 2 and named in capsys.readouterr().err
