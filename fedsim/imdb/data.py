"""IMDb movie reviews (Maas et al., ACL 2011): find and load them, a synthetic look-alike, a
held-out split, and the clients' shards.

Where the reviews come from, in order: an explicit path (`--data`: a CSV with columns
review,sentiment as in the widely mirrored "IMDB Dataset.csv", or text,label as in the
`datasets` table; or an unpacked aclImdb folder, {train,test}/{pos,neg}/*.txt), the
FEDSIM_DATA environment variable (a file, or a folder holding imdb-sample-1k.csv), then
`../shared/data/` beside the project; or a table of the Hugging Face `datasets` library
(`load_hub`: a saved folder, or a hub name such as "imdb", fetched only when asked). HTML
line breaks (<br />) are replaced by spaces. Nothing is downloaded at import or test time.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from fedsim.errors import ConfigError, DataError, check_int, check_real, require
from fedsim.hub import load_table

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = "imdb-sample-1k.csv"
SHARDINGS = ("contiguous", "shuffled")
# (text column, label column) spellings, and how each spells the labels
COLUMNS = (("review", "sentiment"), ("text", "label"))
LABELS = {"positive": 1, "negative": 0, "pos": 1, "neg": 0, "1": 1, "0": 0}


@dataclass(frozen=True)
class Reviews:
    text: tuple[str, ...]
    label: np.ndarray    # (N,) int8: 1 positive, 0 negative
    source: str

    def __len__(self) -> int:
        return len(self.text)

    def subset(self, index) -> "Reviews":
        index = np.asarray(index, np.int64)
        return Reviews(tuple(self.text[i] for i in index), self.label[index], self.source)


def clean(text: str) -> str:
    """HTML line breaks to spaces, runs of white space to one."""
    return re.sub(r"\s+", " ", re.sub(r"<br\s*/?>", " ", text, flags=re.I)).strip()


def locate(data: str | Path | None = None) -> Path:
    """The CSV or aclImdb folder to read. A path the user gave is the only place looked at
    (never replaced by another); without one, $FEDSIM_DATA if set, else ../shared/data/."""
    if data:
        bases, given = [Path(data)], "--data"
    elif os.environ.get("FEDSIM_DATA"):
        bases, given = [Path(os.environ["FEDSIM_DATA"])], "FEDSIM_DATA"
    else:
        bases, given = [PROJECT_ROOT.parent / "shared" / "data"], None
    looked = []
    for base in bases:
        for candidate in (base, base / SAMPLE, base / "aclImdb"):
            looked.append(str(candidate))
            if candidate.is_file() or _is_acl_folder(candidate):
                return candidate
    where = f"{given} = {bases[0]}" if given else "no --data or FEDSIM_DATA given"
    raise DataError(
        f"IMDb reviews not found ({where}; looked at: {', '.join(looked)}). Pass a CSV with "
        "columns review,sentiment (or text,label), or an unpacked aclImdb folder, with --data; "
        "or use --hub imdb when online.")


def _is_acl_folder(path: Path) -> bool:
    return path.is_dir() and any((path / split / "pos").is_dir() for split in ("train", "test"))


def load(path: str | Path) -> Reviews:
    """Reviews from a CSV or an aclImdb folder (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        if not _is_acl_folder(path):
            raise DataError(f"--data {path}: a folder must be an unpacked aclImdb "
                            "({train,test}/{pos,neg}/*.txt)")
        return _load_acl(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"--data {path}: cannot be read as a UTF-8 CSV ({error})") from error
    names = list(rows[0]) if rows else []
    columns = next(((t, l) for t, l in COLUMNS if t in names and l in names), None)
    if columns is None:
        raise DataError(f"--data {path} has columns {names}; it needs review,sentiment or "
                        "text,label")
    return _build([r[columns[0]] for r in rows], [r[columns[1]] for r in rows], str(path))


def _load_acl(path: Path) -> Reviews:
    texts, labels = [], []
    for split in ("train", "test"):
        for name, label in (("pos", 1), ("neg", 0)):
            for file in sorted((path / split / name).glob("*.txt")):
                texts.append(file.read_text(encoding="utf-8"))
                labels.append(label)
    return _build(texts, labels, str(path))


def _build(texts: Sequence[str], labels: Sequence, source: str) -> Reviews:
    if not texts:
        raise DataError(f"{source}: no reviews")
    values = []
    for i, label in enumerate(labels):
        key = str(label).strip().lower()
        if key not in LABELS:
            raise DataError(f"{source}: row {i + 1} has label {label!r}; labels must be "
                            "positive/negative (or pos/neg, 1/0)")
        values.append(LABELS[key])
    return Reviews(tuple(clean(t) for t in texts), np.asarray(values, np.int8), source)


def load_hub(name: str, split: str = "train") -> Reviews:
    """Reviews from the Hugging Face `datasets` library: a folder written by
    Dataset.save_to_disk, or a hub name (e.g. "imdb") fetched by datasets.load_dataset, the
    one path that may use the network, and only when asked."""
    table = load_table(name, split)
    columns = next(((t, l) for t, l in COLUMNS if t in table.column_names
                    and l in table.column_names), None)
    if columns is None:
        raise DataError(f"--hub {name!r} has columns {table.column_names}; it needs text,label "
                        "or review,sentiment")
    return _build(table[columns[0]], table[columns[1]], f"hub:{name}:{split}")


POSITIVE_WORDS = ("great", "wonderful", "moving", "brilliant", "loved", "superb", "funny")
NEGATIVE_WORDS = ("awful", "boring", "dull", "terrible", "hated", "weak", "painful")
FILLER = ("the", "film", "movie", "plot", "actor", "scene", "story", "was", "and", "a", "it",
          "with", "director", "ending", "music", "this", "of", "so")


def synthetic(num_reviews: int = 200, words: int = 40, seed: int = 0) -> Reviews:
    """A tiny labelled corpus for tests: filler words with a few sentiment words of the label's
    polarity (and some of the other), with <br /> breaks to be cleaned."""
    check_int("num_reviews", num_reviews, 2)
    rng = np.random.default_rng(seed)
    labels = np.arange(num_reviews) % 2
    rng.shuffle(labels)
    texts = []
    for label in labels:
        own, other = (POSITIVE_WORDS, NEGATIVE_WORDS) if label else (NEGATIVE_WORDS, POSITIVE_WORDS)
        pool = rng.choice(FILLER, size=words).tolist()
        for i in rng.choice(words, size=4, replace=False):
            pool[i] = rng.choice(own if rng.uniform() < 0.8 else other)
        texts.append(" ".join(pool[: words // 2]) + " <br /><br /> " + " ".join(pool[words // 2:]))
    return _build(texts, labels.tolist(), f"synthetic:{num_reviews}:{seed}")


def split(reviews: Reviews, held_out: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices: a seeded permutation, held_out of the reviews set aside."""
    check_real("held_out", held_out, 0.0, 1.0, lo_open=True, hi_open=True)
    order = np.random.default_rng(seed).permutation(len(reviews))
    n_out = max(1, int(round(held_out * len(reviews))))
    require(n_out < len(reviews), "held_out", held_out,
            f"must leave training reviews out of {len(reviews)}")
    return np.sort(order[n_out:]), np.sort(order[:n_out])


def shard(labels, num_clients: int, sharding: str = "contiguous",
          positive_fraction: float | Sequence[float] | None = None, seed: int = 0):
    """Each client's review indices (a list of K arrays, disjoint).

    contiguous: consecutive blocks in file order (the authors' shards); shuffled: blocks of a
    seeded permutation. positive_fraction (one number, or K numbers) instead draws each client
    N // K reviews of which that fraction are positive (label skew), without replacement.
    """
    labels = np.asarray(labels)
    N = len(labels)
    check_int("clients (K)", num_clients, 1, N)
    K = num_clients
    require(sharding in SHARDINGS, "sharding", sharding, f"must be one of {', '.join(SHARDINGS)}")
    rng = np.random.default_rng(seed)
    if positive_fraction is None:
        order = np.arange(N) if sharding == "contiguous" else rng.permutation(N)
        return [np.sort(part) for part in np.array_split(order, K)]
    fractions = np.broadcast_to(np.asarray(positive_fraction, float), (K,)) \
        if np.ndim(positive_fraction) == 0 else np.asarray(positive_fraction, float)
    require(fractions.shape == (K,), "positive_fraction", list(np.atleast_1d(positive_fraction)),
            f"must be one number or K = {K} numbers")
    for k, f in enumerate(fractions):
        check_real(f"positive_fraction[{k}]", float(f), 0.0, 1.0)
    size = N // K
    wanted = np.round(fractions * size).astype(int)
    positives, negatives = rng.permutation(np.flatnonzero(labels == 1)), \
        rng.permutation(np.flatnonzero(labels == 0))
    if wanted.sum() > len(positives) or (size - wanted).sum() > len(negatives):
        raise ConfigError("positive_fraction", fractions.tolist(),
                          f"asks for {wanted.sum()} positive and {(size - wanted).sum()} negative "
                          f"reviews; there are {len(positives)} and {len(negatives)}")
    p_cut, n_cut = np.cumsum([0, *wanted]), np.cumsum([0, *(size - wanted)])
    return [np.sort(np.concatenate([positives[p_cut[k]:p_cut[k + 1]],
                                    negatives[n_cut[k]:n_cut[k + 1]]])) for k in range(K)]
