"""IMDb reviews: loading (the shared sample when present, CSVs of both spellings, aclImdb
folders, synthetic text), clear errors for missing or bad data, the split and the shards."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.errors import ConfigError, DataError
from fedsim.imdb import data as D

SAMPLE = D.PROJECT_ROOT.parent / "shared" / "data" / D.SAMPLE


def test_clean_strips_html_breaks_and_spaces():
    assert D.clean("Great.<br /><br />Really  great<BR/>!\n") == "Great. Really great !"


@pytest.mark.skipif(not SAMPLE.exists(), reason="the shared IMDb sample is not beside the project")
def test_shared_sample_loads_with_its_published_counts(monkeypatch):
    monkeypatch.delenv("FEDSIM_DATA", raising=False)
    reviews = D.load(D.locate())
    assert len(reviews) == 1003 and int(reviews.label.sum()) == 502   # its README: 502 / 501
    assert not any("<br" in t.lower() for t in reviews.text)
    assert sum(len(t) > 200 for t in reviews.text) > 900


def test_both_csv_spellings_and_an_acl_folder(tmp_path):
    (tmp_path / "a.csv").write_text('review,sentiment\n"Loved it<br />!",positive\nMeh,negative\n')
    (tmp_path / "b.csv").write_text("text,label\nLoved it,1\nMeh,0\n")
    a, b = D.load(tmp_path / "a.csv"), D.load(tmp_path / "b.csv")
    assert a.text == ("Loved it !", "Meh") and a.label.tolist() == b.label.tolist() == [1, 0]
    for split, name, text in (("train", "pos", "good"), ("train", "neg", "bad"), ("test", "pos", "fine")):
        folder = tmp_path / "aclImdb" / split / name
        folder.mkdir(parents=True)
        (folder / "0_9.txt").write_text(text)
    acl = D.load(D.locate(tmp_path))
    assert acl.text == ("good", "bad", "fine") and acl.label.tolist() == [1, 0, 1]


def test_missing_and_bad_data_get_clear_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("FEDSIM_DATA", raising=False)
    with pytest.raises(DataError, match=r"not found \(--data = .*nothing.*looked at.*--hub imdb"):
        D.locate(tmp_path / "nothing")
    (tmp_path / "x.csv").write_text("title,score\nA,1\n")
    with pytest.raises(DataError, match=r"columns \['title', 'score'\].*review,sentiment"):
        D.load(tmp_path / "x.csv")
    (tmp_path / "y.csv").write_text("review,sentiment\nA,maybe\n")
    with pytest.raises(DataError, match="row 1 has label 'maybe'"):
        D.load(tmp_path / "y.csv")
    (tmp_path / "z.csv").write_bytes(b"review,sentiment\n\xff\xfe,positive\n")
    with pytest.raises(DataError, match="UTF-8"):
        D.load(tmp_path / "z.csv")
    # a path the user gave is never replaced by the fallback, even when the fallback exists
    monkeypatch.setenv("FEDSIM_DATA", str(tmp_path))
    with pytest.raises(DataError, match="--data"):
        D.locate(tmp_path / "other")


def test_synthetic_is_seeded_and_labelled():
    a, b, c = D.synthetic(50, seed=1), D.synthetic(50, seed=1), D.synthetic(50, seed=2)
    assert a.text == b.text and a.text != c.text
    assert int(a.label.sum()) == 25 and not any("<br" in t for t in a.text)
    pos = np.mean([sum(w in D.POSITIVE_WORDS for w in t.split()) for t, l in zip(a.text, a.label) if l])
    neg = np.mean([sum(w in D.POSITIVE_WORDS for w in t.split()) for t, l in zip(a.text, a.label) if not l])
    assert pos > neg   # the label is in the words


def test_split_and_shards():
    reviews = D.synthetic(100, seed=0)
    train, held = D.split(reviews, 0.2, seed=3)
    assert len(held) == 20 and len(np.intersect1d(train, held)) == 0 and len(train) + 20 == 100
    blocks = D.shard(reviews.label, 3)
    assert [b.tolist()[:2] for b in blocks] == [[0, 1], [34, 35], [67, 68]]   # the authors'
    shuffled = D.shard(reviews.label, 3, "shuffled", seed=1)
    assert sorted(np.concatenate(shuffled).tolist()) == list(range(100))
    skew = D.shard(reviews.label, 4, positive_fraction=[0.2, 0.4, 0.6, 0.8], seed=0)
    got = [reviews.label[s].mean() for s in skew]
    np.testing.assert_allclose(got, [0.2, 0.4, 0.6, 0.8])   # 25 reviews each
    assert len(np.unique(np.concatenate(skew))) == 100
    with pytest.raises(ConfigError, match="asks for 90 positive and 9 negative reviews; there are 50 and 50"):
        D.shard(reviews.label, 3, positive_fraction=0.9)
    with pytest.raises(ConfigError, match="clients \\(K\\) = 0"):
        D.shard(reviews.label, 0)
    with pytest.raises(ConfigError, match="sharding = 'random'"):
        D.shard(reviews.label, 2, "random")
    with pytest.raises(ConfigError, match=r"positive_fraction\[1\] = 1.5"):
        D.shard(reviews.label, 2, positive_fraction=[0.5, 1.5])


def test_tokenizer_is_deterministic_round_trips_and_refuses_damage(tmp_path):
    from fedsim.imdb import tokenizer as T

    texts = D.synthetic(60, seed=0).text
    tok = T.build(texts, 30)
    assert tok.size == 30 and tok.vocab[:3] == T.SPECIALS and T.build(texts, 30) == tok
    assert "the" in tok.vocab and "zyzzyva" not in tok.vocab
    known = " ".join(tok.vocab[3:7])
    ids = tok.encode(known, length=8, bos=True)
    assert ids.shape == (8,) and ids[0] == T.BOS and ids[-1] == T.PAD
    assert tok.decode(ids) == known
    assert tok.encode("zyzzyva")[0] == T.UNK                  # unknown words
    assert tok.encode("a b c d e f", length=3).shape == (3,)   # truncation
    tok.save(tmp_path / "tok.json")
    assert T.load(tmp_path / "tok.json") == tok
    text = (tmp_path / "tok.json").read_text().replace(f'"{tok.vocab[5]}"', '"zzz"')
    (tmp_path / "bad.json").write_text(text)
    with pytest.raises(DataError, match="damaged"):
        T.load(tmp_path / "bad.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(DataError, match="not a fedsim tokenizer"):
        T.load(tmp_path / "junk.json")
    with pytest.raises(ConfigError, match="vocab_size = 3"):
        T.build(texts, 3)


def _encoded(reviews, index, tok, length=64):
    return np.stack([tok.encode(reviews.text[i], length=length) for i in index])


def test_sentiment_classifier_learns_the_label():
    from fedsim.imdb import sentiment as C
    from fedsim.imdb import tokenizer as T

    reviews = D.synthetic(300, seed=4)
    train, held = D.split(reviews, 0.25, seed=0)
    tok = T.build([reviews.text[i] for i in train], 40)
    params = C.train(_encoded(reviews, train, tok), reviews.label[train], tok.size, steps=200)
    assert C.accuracy(params, _encoded(reviews, held, tok), reviews.label[held]) > 0.9
    # it scores any batch shape, e.g. (clients, batch, tokens), and a positive word helps
    ids = _encoded(reviews, held[:6], tok).reshape(2, 3, 64)
    p = np.asarray(C.p_positive(params, ids))
    assert p.shape == (2, 3) and np.all((p > 0) & (p < 1))
    good, bad = (np.asarray(C.p_positive(params, tok.encode(w, length=4)[None]))[0]
                 for w in ("great wonderful", "awful boring"))
    assert good > 0.5 > bad
    with pytest.raises(ConfigError, match="steps = 0"):
        C.train(_encoded(reviews, train, tok), reviews.label[train], tok.size, steps=0)


@pytest.mark.skipif(not SAMPLE.exists(), reason="the shared IMDb sample is not beside the project")
def test_sentiment_classifier_on_the_shared_sample(monkeypatch):
    """Measured: 78.1% held out (800 training reviews); a majority guess gives about 50%."""
    from fedsim.imdb import sentiment as C
    from fedsim.imdb import tokenizer as T

    monkeypatch.delenv("FEDSIM_DATA", raising=False)
    reviews = D.load(D.locate())
    train, held = D.split(reviews, 0.2, seed=0)
    tok = T.build([reviews.text[i] for i in train], 5000)
    params = C.train(_encoded(reviews, train, tok, 256), reviews.label[train], tok.size)
    assert C.accuracy(params, _encoded(reviews, held, tok, 256), reviews.label[held]) > 0.74


def test_hub_table_from_a_saved_folder(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_dict(
        {"text": ["Loved it<br />", "Meh"], "label": [1, 0]})}).save_to_disk(str(tmp_path / "imdb"))
    reviews = D.load_hub(str(tmp_path / "imdb"))
    assert reviews.text == ("Loved it", "Meh") and reviews.label.tolist() == [1, 0]
    with pytest.raises(ConfigError, match="must have a test split"):
        D.load_hub(str(tmp_path / "imdb"), "test")
    with pytest.raises(DataError, match="no such folder"):
        D.load_hub(str(tmp_path / "missing"))
