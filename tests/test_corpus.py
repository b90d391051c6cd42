import hashlib
import math

import numpy as np
import pytest

from tinygpt_bench import corpus
from tinygpt_bench.errors import UserError

SYNTHETIC_SHA256 = "8c9541868e563ddae406f81964e5847e12851c459499905a29726edcad7b6632"


def test_synthetic_is_deterministic_and_pinned():
    c = corpus.synthetic()
    assert len(c.data) == 1 << 20 and c.data.dtype == np.uint8
    assert c.sha256 == SYNTHETIC_SHA256 == hashlib.sha256(c.data.tobytes()).hexdigest()
    assert corpus.synthetic(seed=1).sha256 != c.sha256


def test_synthetic_looks_like_text_with_a_known_floor():
    c = corpus.synthetic(n_bytes=200_000)
    text = c.data.tobytes().decode("ascii")
    assert text[0].isupper() and ". " in text and ", " in text and "\n" in text
    assert 0.3 < c.entropy_floor_nats < math.log(256)
    # the empirical unigram entropy of the bytes is above the true entropy rate
    counts = np.bincount(c.data, minlength=256)
    p = counts[counts > 0] / counts.sum()
    assert -(p * np.log(p)).sum() > c.entropy_floor_nats


def test_batches_are_seeded_windows_of_the_training_split():
    c = corpus.synthetic(n_bytes=10_000)
    a = corpus.sample_batches(c, batch=4, ctx=16, steps=3, seed=5)
    b = corpus.sample_batches(c, batch=4, ctx=16, steps=3, seed=5)
    assert len(a) == 3 and a[0].shape == (4, 17) and a[0].dtype == np.int32
    assert all((x == y).all() for x, y in zip(a, b))
    train = c.train.tobytes()
    for row in a[2]:
        assert bytes(row.astype(np.uint8)) in train
    assert not (corpus.sample_batches(c, 4, 16, 3, seed=6)[0] == a[0]).all()


def test_file_corpus_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        corpus.load(str(tmp_path / "missing.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match="is empty"):
        corpus.load(str(empty))
    short = tmp_path / "short.txt"
    short.write_bytes(b"x" * 20)
    c = corpus.load(str(short))
    assert c.name == str(short) and c.sha256 == hashlib.sha256(b"x" * 20).hexdigest()
    with pytest.raises(UserError, match="fewer than ctx\\+1 = 33"):
        corpus.sample_batches(c, batch=2, ctx=32, steps=1)


def test_shakespeare_download_checked_and_cached(tmp_path, monkeypatch):
    text = b"First Citizen:\nBefore we proceed any further, hear me speak.\n" * 50
    src = tmp_path / "upstream.txt"
    src.write_bytes(text)
    monkeypatch.setattr(corpus, "SHAKESPEARE_SHA256", hashlib.sha256(text).hexdigest())
    c = corpus.shakespeare(url=src.as_uri())
    assert c.name == "shakespeare" and c.data.tobytes() == text
    src.unlink()  # the second load comes from the cache, not the address
    assert corpus.shakespeare(url=src.as_uri()).sha256 == c.sha256
    cached = corpus.cache_dir() / "tinyshakespeare.txt"
    cached.write_bytes(text[:-1] + b"?")
    with pytest.raises(UserError, match="corrupted.*delete it"):
        corpus.shakespeare(url=src.as_uri())


def test_shakespeare_wrong_content_is_refused(tmp_path):
    src = tmp_path / "not-shakespeare.txt"
    src.write_bytes(b"hello")
    with pytest.raises(UserError, match="expected 86c4e6aa"):
        corpus.shakespeare(url=src.as_uri())
    assert not (corpus.cache_dir() / "tinyshakespeare.txt").exists()


def test_shakespeare_unreachable_names_the_fix():
    with pytest.raises(UserError, match="could not download.*--corpus synthetic"):
        corpus.shakespeare(url="file:///nonexistent/x.txt")
