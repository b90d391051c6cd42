"""The training text and the batch sampler (docs/MODEL.md "Data").

A corpus is a byte string with a name and a sha256 (both go into every result):
- `synthetic` (the default, offline): generated here from a seed, natural-language-like
  (Zipf-distributed pseudo-words, commas, sentences, paragraphs) with an exactly known
  entropy floor, so an honest loss has something to approach and 15 steps cannot
  memorise it;
- `shakespeare`: TinyShakespeare, fetched once from its public address, checked against
  its sha256 and cached;
- a path to any text file.

Batches: B windows of T+1 bytes at uniform random offsets in the training split (the
first 90%), from one seeded generator, sampled once and fed to every backend.
"""

from __future__ import annotations

import hashlib
import math
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinygpt_bench.errors import UserError

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_BYTES = 1_115_394
TRAIN_FRACTION = 0.9


@dataclass(frozen=True)
class Corpus:
    name: str  # "synthetic", "shakespeare" or the file path
    data: np.ndarray  # (N,) uint8
    sha256: str
    entropy_floor_nats: float | None = None  # per byte, where known

    @property
    def train(self) -> np.ndarray:
        return self.data[: int(len(self.data) * TRAIN_FRACTION)]

    def describe(self) -> dict:
        return {"corpus": self.name, "corpus_sha256": self.sha256, "corpus_bytes": int(len(self.data))}


def _make(name: str, raw: bytes, floor: float | None = None) -> Corpus:
    return Corpus(name, np.frombuffer(raw, dtype=np.uint8), hashlib.sha256(raw).hexdigest(), floor)


# --- synthetic ---------------------------------------------------------------------------
# A counter-based generator (SplitMix64) written out here, so the synthetic corpus, and
# so its sha256, depend on this file alone and not on a library's random stream.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _uniform(seed: int, stream: int, n: int) -> np.ndarray:
    """n uniforms in [0, 1) from stream `stream` of `seed`."""
    with np.errstate(over="ignore"):
        base = _mix(np.array([seed * 1_000_003 + stream], dtype=np.uint64))[0]
        z = _mix(base + (np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


_ONSETS = "b c d f g h j k l m n p r s t v w y z bl br ch cl cr dr fl fr gr pl pr sh st th tr".split()
_VOWELS = "a e i o u a e i o ea ou ai".split()
_CODAS = ["", "", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ng"]
# separator after each word: (text, probability); a sentence end capitalises the next word
_SEPARATORS = ((" ", 0.86), (", ", 0.06), (". ", 0.064), (".\n", 0.016))


def _vocabulary(seed: int, n_words: int) -> list[str]:
    u = _uniform(seed, 1, n_words * 16)
    words, seen, i = [], set(), 0
    while len(words) < n_words:
        n_syl = 1 + int(u[i] * 3.2) % 4
        i += 1
        w = ""
        for _ in range(n_syl):
            w += _ONSETS[int(u[i] * len(_ONSETS))] + _VOWELS[int(u[i + 1] * len(_VOWELS))]
            w += _CODAS[int(u[i + 2] * len(_CODAS))]
            i += 3
        if w not in seen:
            seen.add(w)
            words.append(w)
        if i + 16 > len(u):
            u = np.concatenate([u, _uniform(seed, 2 + len(u), n_words * 16)])
    return words


def _zipf(n: int) -> np.ndarray:
    w = 1.0 / (np.arange(n) + 2.7) ** 1.1  # Zipf-Mandelbrot word frequencies
    return w / w.sum()


def synthetic_entropy_floor(seed: int = 0, n_words: int = 3000) -> float:
    """Entropy rate in nats per byte of the synthetic source.

    Words are drawn i.i.d. with Zipf-Mandelbrot frequencies, each followed by an
    independent separator; spelling is unique, lowercase, and capitalisation after a
    sentence end is determined by the text before it, so the byte stream parses
    uniquely into (word, separator) events and its entropy rate is
    (H(word) + H(separator)) / E[bytes per event].
    """
    vocab, p = _vocabulary(seed, n_words), _zipf(n_words)
    sep_p = np.array([q for _, q in _SEPARATORS])
    h = -(p * np.log(p)).sum() - (sep_p * np.log(sep_p)).sum()
    mean_bytes = (p * np.array([len(w) for w in vocab])).sum() + (sep_p * [len(s) for s, _ in _SEPARATORS]).sum()
    return float(h / mean_bytes)


def synthetic(seed: int = 0, n_bytes: int = 1 << 20, n_words: int = 3000) -> Corpus:
    vocab, p = _vocabulary(seed, n_words), _zipf(n_words)
    cap = [w[0].upper() + w[1:] for w in vocab]
    n_events = n_bytes // 4 + 1000  # mean event is about 6 bytes; check below
    cdf_w = np.cumsum(p)
    cdf_s = np.cumsum([q for _, q in _SEPARATORS])
    ids = np.minimum(np.searchsorted(cdf_w, _uniform(seed, 3, n_events), side="right"), n_words - 1)
    seps = np.minimum(np.searchsorted(cdf_s, _uniform(seed, 4, n_events), side="right"), len(_SEPARATORS) - 1)
    parts, capital = [], True
    for w, s in zip(ids.tolist(), seps.tolist()):
        parts.append(cap[w] if capital else vocab[w])
        parts.append(_SEPARATORS[s][0])
        capital = s >= 2
    raw = "".join(parts).encode("ascii")
    if len(raw) < n_bytes:  # cannot happen with these parameters; guard the invariant
        raise RuntimeError("synthetic corpus generator produced too few bytes")
    return _make("synthetic", raw[:n_bytes], synthetic_entropy_floor(seed, n_words))


# --- files and downloads -----------------------------------------------------------------
def from_file(path: str | Path) -> Corpus:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"corpus file {path} does not exist; pass an existing text file, 'synthetic' or 'shakespeare'")
    raw = path.read_bytes()
    if not raw:
        raise UserError(f"corpus file {path} is empty; pass a text file with content")
    return _make(str(path), raw)


def cache_dir() -> Path:
    base = os.environ.get("TINYGPT_BENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tinygpt-bench"
    )
    return Path(base)


def shakespeare(url: str | None = None) -> Corpus:
    """TinyShakespeare, downloaded once into the cache and checked against its sha256."""
    url = url or os.environ.get("TINYGPT_BENCH_SHAKESPEARE_URL") or SHAKESPEARE_URL
    path = cache_dir() / "tinyshakespeare.txt"
    if not path.is_file():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create the cache folder {path.parent} ({e.strerror}); set TINYGPT_BENCH_CACHE "
                            "to a writable folder, or use --corpus synthetic") from None
        try:
            with urllib.request.urlopen(url, timeout=60) as r:
                raw = r.read()
        except (urllib.error.URLError, OSError) as e:
            raise UserError(
                f"could not download TinyShakespeare from {url} ({e}); "
                f"check the network, or save the file to {path} yourself, or use --corpus synthetic"
            ) from None
        digest = hashlib.sha256(raw).hexdigest()
        if digest != SHAKESPEARE_SHA256:
            raise UserError(
                f"download from {url} has sha256 {digest}, expected {SHAKESPEARE_SHA256}; "
                "the address serves other content: use --corpus PATH with a verified copy"
            )
        tmp = path.with_suffix(".part")
        try:
            tmp.write_bytes(raw)
            tmp.replace(path)
        except OSError as e:
            raise UserError(f"cannot write {path} ({e.strerror}); set TINYGPT_BENCH_CACHE to a writable folder, "
                            "or use --corpus synthetic") from None
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SHAKESPEARE_SHA256:
        raise UserError(
            f"cached {path} has sha256 {digest[:16]}..., expected {SHAKESPEARE_SHA256[:16]}... (corrupted); "
            f"delete it and rerun to download it again"
        )
    return _make("shakespeare", raw)


def load(spec: str = "synthetic") -> Corpus:
    """'synthetic' (default), 'shakespeare', or a path to a text file."""
    if spec == "synthetic":
        return synthetic()
    if spec == "shakespeare":
        return shakespeare()
    return from_file(spec)


# --- batches -------------------------------------------------------------------------------
def _check_batch_memory(batch: int, ctx: int, steps: int) -> None:
    """Every step's batch is made up front (the same work for every backend): its index array is
    8 bytes (int64) a token, steps x B x (T+1). Past half the memory available now it is refused
    before it is made, naming the step count (a MemoryError would say neither)."""
    need = 8 * steps * batch * (ctx + 1)
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return
    if need > free / 2:
        raise UserError(f"--steps {steps}: the batches of {steps} steps take {need / 2**30:.1f} GiB, more than half "
                        f"the {free / 2**30:.1f} GiB of memory free here; use fewer steps (the protocol's 15)")


def sample_batches(corpus: Corpus, batch: int, ctx: int, steps: int, seed: int = 0) -> list[np.ndarray]:
    """`steps` batches, each int32 (B, T+1): B windows at uniform offsets in the training split."""
    train = corpus.train
    if len(train) < ctx + 1:
        raise UserError(
            f"corpus '{corpus.name}' has {len(train)} training bytes (first {TRAIN_FRACTION:.0%} of "
            f"{len(corpus.data)}), fewer than ctx+1 = {ctx + 1}; use a longer text or a preset with smaller ctx"
        )
    _check_batch_memory(batch, ctx, steps)
    rng = np.random.Generator(np.random.PCG64(seed))
    offsets = rng.integers(0, len(train) - ctx, size=(steps, batch))  # window [o, o+T] inclusive
    idx = offsets[..., None] + np.arange(ctx + 1)
    return [b.astype(np.int32) for b in train[idx]]


def floor_text(c: Corpus) -> str:
    if c.entropy_floor_nats is None:
        return "unknown"
    return f"{c.entropy_floor_nats:.3f} nats/byte ({c.entropy_floor_nats / math.log(2):.3f} bits)"
