"""A word-level tokenizer built offline from the training reviews (no download, no external
vocabulary), saved with the results so that a run's token ids can be read back.

Words are lower-cased runs of letters, digits and apostrophes, and single punctuation marks.
The vocabulary is the `size - 3` most frequent words of the training texts (ties broken
alphabetically, so the same texts give the same ids), after three special tokens:
<pad> = 0, <unk> = 1, <bos> = 2.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Iterable, NamedTuple

import numpy as np

from fedsim.errors import DataError, check_int
from fedsim.results import write_json

SPECIALS = ("<pad>", "<unk>", "<bos>")
PAD, UNK, BOS = range(3)
_WORD = re.compile(r"[a-z0-9']+|[^\sa-z0-9']")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class Tokenizer(NamedTuple):
    vocab: tuple[str, ...]   # id -> word; the first three are SPECIALS

    @property
    def size(self) -> int:
        return len(self.vocab)

    @property
    def fingerprint(self) -> str:
        """sha256 of the vocabulary: what a cache of a model trained on these ids is keyed by."""
        return hashlib.sha256("\n".join(self.vocab).encode()).hexdigest()

    def encode(self, text: str, length: int | None = None, bos: bool = False) -> np.ndarray:
        """int32 ids; with `length`, truncated or padded with <pad> to exactly that many."""
        index = {w: i for i, w in enumerate(self.vocab)}
        ids = ([BOS] if bos else []) + [index.get(w, UNK) for w in words(text)]
        if length is not None:
            check_int("length", length, 1)
            ids = ids[:length] + [PAD] * max(0, length - len(ids))
        return np.asarray(ids, np.int32)

    def decode(self, ids) -> str:
        return " ".join(self.vocab[i] for i in np.asarray(ids).tolist() if i not in (PAD, BOS))

    def save(self, path: Path) -> None:
        write_json(Path(path), {"kind": "fedsim word tokenizer", "vocab": list(self.vocab),
                                "sha256": self.fingerprint})


def build(texts: Iterable[str], size: int) -> Tokenizer:
    """The `size`-token vocabulary of `texts` (specials included)."""
    check_int("vocab_size", size, len(SPECIALS) + 1)
    counts = Counter(w for t in texts for w in words(t))
    ranked = sorted(counts, key=lambda w: (-counts[w], w))[: size - len(SPECIALS)]
    return Tokenizer(SPECIALS + tuple(ranked))


def load(path: Path) -> Tokenizer:
    """A saved tokenizer, checked: a damaged or foreign file is refused, never half-used."""
    try:
        saved = json.loads(Path(path).read_text())
        vocab = tuple(saved["vocab"])
        ok = saved.get("kind") == "fedsim word tokenizer" and vocab[:3] == SPECIALS
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(f"{path}: not a fedsim tokenizer ({type(error).__name__}: {error})") from error
    tokenizer = Tokenizer(vocab)
    if not ok or saved.get("sha256") != tokenizer.fingerprint:
        raise DataError(f"{path}: not a fedsim tokenizer, or damaged (its checksum does not match)")
    return tokenizer
