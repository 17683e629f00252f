"""MovieLens ratings: find, verify and load them; a synthetic look-alike; per-user splits.

Releases: ml-latest-small, ml-100k and ml-1m (GroupLens), each in its own file format. Where
the data come from, in order: an explicit path (`--data`), the FEDSIM_DATA environment
variable (a file or a folder holding it), then `../shared/data/` beside the project; or a
table of the Hugging Face `datasets` library (`load_hub`). Nothing is downloaded unless asked
(`download`, or a hub name). A zip is checked against its published checksum. Labels follow
the FedRLHF authors: a rating >= 4 is a positive ("recommend").
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedsim.choices import MOVIELENS_RELEASES
from fedsim.errors import DataError, check_int, check_real, require
from fedsim.hub import load_table

# Checksums as GroupLens publishes them (ml-100k.zip.md5, ml-1m.zip.md5) or, for
# ml-latest-small, the sha256 of the copy in ../shared/data. Rating and movie files differ by
# release: ml-latest-small is CSV, ml-100k tab/pipe-separated, ml-1m "::"-separated (Latin-1).
DATASETS = {
    "ml-latest-small": {
        "sha256": "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
        "url": "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip",
        "files": ("ratings.csv", "movies.csv"),
    },
    "ml-100k": {
        "md5": "0e33842e24a9c977be4e0107933c0723",
        "url": "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        "files": ("u.data", "u.item"),
    },
    "ml-1m": {
        "md5": "c4d9eecfca2ab87c1945afe126590906",
        "url": "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        "files": ("ratings.dat", "movies.dat"),
    },
}
assert tuple(DATASETS) == MOVIELENS_RELEASES
# ml-100k's u.item ends with 19 genre flags in this order (its u.genre).
GENRES_100K = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
               "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
               "Romance", "Sci-Fi", "Thriller", "War", "Western")
POSITIVE_RATING = 4.0
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Ratings:
    """Ratings with users and movies renumbered 0..n-1 (in order of their original ids)."""

    user: np.ndarray       # (N,) int32
    movie: np.ndarray      # (N,) int32
    rating: np.ndarray     # (N,) float32, 0.5 ... 5 stars
    genres: np.ndarray     # (n_movies, G) float32 one-hot (several genres per movie)
    genre_names: tuple[str, ...]
    source: str
    year: np.ndarray | None = None   # (n_movies,) float32 release year, NaN unknown; None: no years

    @property
    def num_users(self) -> int:
        return int(self.user.max()) + 1

    @property
    def num_movies(self) -> int:
        return self.genres.shape[0]

    @property
    def label(self) -> np.ndarray:
        return (self.rating >= POSITIVE_RATING).astype(np.float32)


def locate(data: str | Path | None = None, name: str = "ml-latest-small") -> Path:
    """The zip (or unpacked folder) of dataset `name`. An explicit `data` path is the only
    place looked at when given (a path the user typed is never replaced by another); without
    it, $FEDSIM_DATA alone if set; with neither, ../shared/data/ beside the project. Raises
    DataError saying where it looked and how to get the data."""
    if data:
        bases, given = [data], "--data"
    elif os.environ.get("FEDSIM_DATA"):
        bases, given = [os.environ["FEDSIM_DATA"]], "FEDSIM_DATA"
    else:
        bases, given = [PROJECT_ROOT.parent / "shared" / "data"], None
    ratings_file = DATASETS[name]["files"][0]
    looked = []
    for base in map(Path, bases):
        for candidate in (base, base / f"{name}.zip", base / name):
            looked.append(str(candidate))
            if candidate.is_file() or (candidate.is_dir() and (candidate / ratings_file).is_file()):
                return candidate
    where = f"{given} = {bases[0]}" if given else "no --data or FEDSIM_DATA given"
    raise DataError(
        f"MovieLens {name} not found ({where}; looked at: {', '.join(looked)}). "
        f"Download {DATASETS[name]['url']} and pass its path with --data, or set FEDSIM_DATA "
        f"to the folder holding {name}.zip (or run with --download DIR).")


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, name: str) -> None:
    """Raise DataError unless the zip has the published checksum of `name`."""
    for algorithm in ("sha256", "md5"):
        expected = DATASETS[name].get(algorithm)
        if expected:
            actual = file_digest(path, algorithm)
            if actual != expected:
                raise DataError(f"{path} has {algorithm} {actual}, expected {expected} for "
                                f"{name}: the file is corrupt or another version; download it "
                                f"again")


def download(dest: Path, name: str = "ml-latest-small") -> Path:
    """Fetch the GroupLens zip into `dest` (only when the user asks), verified."""
    import urllib.request

    dest.mkdir(parents=True, exist_ok=True)
    target = dest / f"{name}.zip"
    if not target.exists():
        partial = target.with_suffix(".part")
        try:
            urllib.request.urlretrieve(DATASETS[name]["url"], partial)
        except OSError as error:   # URLError, timeouts, refused connections
            partial.unlink(missing_ok=True)
            raise DataError(f"--download: could not fetch {DATASETS[name]['url']} "
                            f"({getattr(error, 'reason', error)}); download it by hand and "
                            f"pass it with --data") from error
        partial.rename(target)
    return target


def load(path: Path, name: str = "ml-latest-small") -> Ratings:
    """Ratings of dataset `name` from its zip (checksum verified) or an unpacked folder."""
    path = Path(path)
    files = DATASETS[name]["files"]
    encoding = "utf-8" if name == "ml-latest-small" else "latin-1"
    if path.is_file():
        verify(path, name)
        try:
            with zipfile.ZipFile(path) as z:
                inner = {Path(n).name: n for n in z.namelist()}
                texts = [io.TextIOWrapper(z.open(inner[f]), encoding=encoding).read()
                         for f in files]
        except (zipfile.BadZipFile, KeyError, UnicodeDecodeError) as error:
            raise DataError(f"{path} is not a MovieLens {name} zip with {' and '.join(files)}: "
                            f"{error}") from error
    else:
        missing = [f for f in files if not (path / f).is_file()]
        if missing:
            raise DataError(f"{path} has no {' or '.join(missing)}: not an unpacked MovieLens "
                            f"{name} folder")
    try:
        if not path.is_file():
            texts = [(path / f).read_text(encoding=encoding) for f in files]
        return PARSERS[name](*texts, str(path))
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise DataError(f"{path}: the {name} ratings could not be read "
                        f"({type(error).__name__}: {error}); is the file complete and of that "
                        f"release?") from error


def _parse_latest(ratings_text: str, movies_text: str, source: str) -> Ratings:
    rows = list(csv.DictReader(io.StringIO(ratings_text)))
    movies = list(csv.DictReader(io.StringIO(movies_text)))
    movie_genres = {int(r["movieId"]): r["genres"].split("|") for r in movies}
    years = {int(r["movieId"]): title_year(r["title"]) for r in movies}
    return _build([int(r["userId"]) for r in rows], [int(r["movieId"]) for r in rows],
                  [float(r["rating"]) for r in rows], movie_genres, source, years)


def _parse_100k(ratings_text: str, items_text: str, source: str) -> Ratings:
    rows = [line.split("\t") for line in ratings_text.splitlines() if line.strip()]
    movie_genres, years = {}, {}
    for line in items_text.splitlines():
        fields = line.split("|")
        if len(fields) >= 5 + len(GENRES_100K):
            flags = fields[-len(GENRES_100K):]
            movie_genres[int(fields[0])] = [g for g, f in zip(GENRES_100K, flags) if f == "1"]
            # The title's year, else the release date's (dd-Mon-yyyy).
            year, date = title_year(fields[1]), re.fullmatch(r"\d\d-\w{3}-(\d{4})", fields[2])
            years[int(fields[0])] = float(date.group(1)) if np.isnan(year) and date else year
    return _build([int(r[0]) for r in rows], [int(r[1]) for r in rows],
                  [float(r[2]) for r in rows], movie_genres, source, years)


def _parse_1m(ratings_text: str, movies_text: str, source: str) -> Ratings:
    rows = [line.split("::") for line in ratings_text.splitlines() if line.strip()]
    movies = [line.split("::") for line in movies_text.splitlines() if line.strip()]
    movie_genres = {int(f[0]): f[2].split("|") for f in movies}
    years = {int(f[0]): title_year(f[1]) for f in movies}
    return _build([int(r[0]) for r in rows], [int(r[1]) for r in rows],
                  [float(r[2]) for r in rows], movie_genres, source, years)


def title_year(title: str) -> float:
    """The release year a MovieLens title ends with, "Heat (1995)" or "Show (2006-2007)";
    NaN when it has none."""
    found = re.search(r"\((\d{4})(?:\D\d{0,4})?\)\s*$", title)
    return float(found.group(1)) if found else float("nan")


PARSERS = {"ml-latest-small": _parse_latest, "ml-100k": _parse_100k, "ml-1m": _parse_1m}

# Column spellings accepted from a `datasets` table, first match wins.
HUB_COLUMNS = {"user": ("userId", "user_id", "user"),
               "movie": ("movieId", "movie_id", "item_id", "item"),
               "rating": ("rating", "ratings"),
               "genres": ("genres", "genre")}


def load_hub(name: str) -> Ratings:
    """Ratings from the Hugging Face `datasets` library: a folder written by
    Dataset.save_to_disk, or else a hub name fetched by datasets.load_dataset (the one path,
    with --download, that may use the network, and only when asked). One row per rating with
    user, movie, rating and genres columns (MovieLens or snake_case spellings; genres as
    "A|B" strings or lists) and optionally a title (release years); a DatasetDict's "train"
    split is used."""
    table = load_table(name)
    found = {}
    for role, spellings in HUB_COLUMNS.items():
        column = next((c for c in spellings if c in table.column_names), None)
        if column is None:
            raise DataError(f"--hub {name!r} has columns {table.column_names}; it needs a "
                            f"{role} column named one of {list(spellings)}")
        found[role] = table[column]
    movie_genres = {}
    for movie, genres in zip(found["movie"], found["genres"]):
        movie_genres.setdefault(int(movie), genres.split("|") if isinstance(genres, str)
                                else list(genres))
    years = ({int(m): title_year(t) for m, t in zip(found["movie"], table["title"])}
             if "title" in table.column_names else None)
    return _build([int(u) for u in found["user"]], [int(m) for m in found["movie"]],
                  [float(r) for r in found["rating"]], movie_genres, f"hub:{name}", years)


def _build(users, movies, ratings, movie_genres: dict, source: str,
           movie_years: dict | None = None) -> Ratings:
    """Ratings from raw ids: users and rated movies renumbered in order of their ids, genres
    as a multi-hot table over every genre name seen, and release years if given."""
    require(len(users) > 0, "data", source, "must hold at least one rating")
    if not np.all(np.isfinite(ratings)) or np.min(ratings) < 0 or np.max(ratings) > 10:
        raise DataError(f"{source}: ratings must be finite star counts in [0, 10]; found values "
                        f"from {np.min(ratings)} to {np.max(ratings)}")
    users, movies = np.asarray(users), np.asarray(movies)
    genre_names = tuple(sorted({g for gs in movie_genres.values() for g in gs}))
    movie_ids = np.unique(movies)   # only rated movies get an index
    genres = np.zeros((len(movie_ids), len(genre_names)), np.float32)
    column = {g: j for j, g in enumerate(genre_names)}
    for i, m in enumerate(movie_ids):
        for g in movie_genres.get(int(m), []):
            genres[i, column[g]] = 1.0
    years = None if movie_years is None else np.array(
        [movie_years.get(int(m), np.nan) for m in movie_ids], np.float32)
    return Ratings(np.searchsorted(np.unique(users), users).astype(np.int32),
                   np.searchsorted(movie_ids, movies).astype(np.int32),
                   np.asarray(ratings, np.float32), genres, genre_names, source, years)


def synthetic(num_users: int = 60, num_movies: int = 300, num_genres: int = 8,
              ratings_per_user: tuple[int, int] = (20, 120), seed: int = 0) -> Ratings:
    """A MovieLens-shaped data set for tests: users with genre tastes and their own rating
    level, movies with 1-3 genres, a quality and a release year (which ratings ignore),
    half-star ratings in [0.5, 5]."""
    check_int("num_users", num_users, 1)
    check_int("num_movies", num_movies, 2)
    check_int("num_genres", num_genres, 1)
    rng = np.random.default_rng(seed)
    genres = np.zeros((num_movies, num_genres), np.float32)
    for m in range(num_movies):
        genres[m, rng.choice(num_genres, rng.integers(1, min(3, num_genres) + 1), replace=False)] = 1
    quality = rng.normal(0.0, 0.6, num_movies)
    taste = rng.normal(0.0, 0.8, (num_users, num_genres))
    level = rng.normal(3.5, 0.4, num_users)
    user, movie, rating = [], [], []
    for u in range(num_users):
        n = int(rng.integers(ratings_per_user[0], ratings_per_user[1] + 1))
        seen = rng.choice(num_movies, min(n, num_movies), replace=False)
        affinity = genres[seen] @ taste[u] / np.maximum(genres[seen].sum(1), 1)
        stars = level[u] + quality[seen] + affinity + rng.normal(0, 0.5, len(seen))
        user += [u] * len(seen)
        movie += list(seen)
        rating += list(np.clip(np.round(stars * 2) / 2, 0.5, 5.0))
    # Release years from their own stream, so the ratings above do not depend on them.
    year = np.random.default_rng([seed, 1]).integers(1930, 2019, num_movies).astype(np.float32)
    return Ratings(np.array(user, np.int32), np.array(movie, np.int32),
                   np.array(rating, np.float32), genres,
                   tuple(f"genre{j}" for j in range(num_genres)), f"synthetic(seed={seed})", year)


def ratings_by_user(ratings: Ratings) -> list[np.ndarray]:
    """For each user, the indices of its ratings in increasing order (one sort, not a scan
    of all ratings per user)."""
    order = np.argsort(ratings.user, kind="stable")
    counts = np.bincount(ratings.user, minlength=ratings.num_users)
    return np.split(order, np.cumsum(counts)[:-1])


def split_per_user(ratings: Ratings, fractions=(0.7, 0.1, 0.2), seed: int = 0) -> np.ndarray:
    """Each rating's split (0 train, 1 validation, 2 test): every user's ratings are shuffled
    and cut by `fractions`, so each user appears in every split it has ratings for."""
    require(len(fractions) == 3 and abs(sum(fractions) - 1) < 1e-9, "fractions", fractions,
            "must be three numbers summing to 1")
    for f in fractions:
        check_real("fractions", f, 0.0, 1.0)
    rng = np.random.default_rng(seed)
    split = np.zeros(len(ratings.user), np.int8)
    for idx in ratings_by_user(ratings):
        idx = rng.permutation(idx)
        n_train = int(round(fractions[0] * len(idx)))
        n_val = int(round(fractions[1] * len(idx)))
        split[idx[n_train:n_train + n_val]] = 1
        split[idx[n_train + n_val:]] = 2
    return split
