"""A character-level LSTM on CPython's ``pydoc_data.topics``, DARB-pruned (PyTorch, CPU).

The corpus ships with CPython (no download): the help texts of ``pydoc``, joined in
sorted key order. The first 90% is the training text, the last 10% the validation
text. The vocabulary is every character seen at least ``min_count`` times in the
training text, in code-point order, after an unknown symbol (id 0) that every other
character maps to.

The model feeds one-hot characters (not an embedding) to a one-layer LSTM and a
Linear head, so the gate matrix over ``[x_t; h_{t-1}]`` is exactly the matrix the
engine runs, with ``x_t`` a one-hot int8 vector (:mod:`darbgen.sim.lstm_golden`).

Pruning (:func:`prune_lstm`: DARB or any other method of
:mod:`darbgen.pruning.methods`) acts on the stacked gate matrix ``[W_ih | W_hh]`` (the
artifact's layer ``"lstm.l0"``) progressively, with masked fine-tuning after each step. The head
(``vocab × hidden``, a tenth of the gate weights at hidden 128) stays dense: it is
exported with block size 1, so the engine runs it too and the perplexity change
measures the gate pruning alone.

>>> corpus = load_corpus()
>>> model = CharLSTM(corpus.vocab_size, 32)
>>> _ = train_lm(model, corpus.train, steps=5)          # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..format import Artifact, SparseLayer
from ..sim.lstm_golden import stream_split
from .methods import PrunableLayer, PruningMethod, export_layer, prunable_layers

__all__ = ["VALID_FRACTION", "MIN_COUNT", "UNKNOWN", "GATE_LAYER", "HEAD_LAYER", "Corpus",
           "load_corpus", "CharLSTM", "train_lm", "perplexity", "gate_layer",
           "prune_lstm", "export_lstm"]

#: Fraction of the corpus text (its end) held out for validation.
VALID_FRACTION = 0.1
#: Characters seen fewer times than this in the training text map to the unknown symbol.
MIN_COUNT = 5
#: Vocabulary entry 0: the unknown symbol.
UNKNOWN = "\ufffd"
#: Artifact names of the gate and head layers (the gate name follows ``prunable_layers``).
GATE_LAYER = "lstm.l0"
HEAD_LAYER = "head"


@dataclass(frozen=True, eq=False)
class Corpus:
    """A character corpus split into training and validation ids.

    Parameters
    ----------
    vocab : tuple of str
        The symbols; ``vocab[0]`` is :data:`UNKNOWN`.
    train, valid : array of int64
        The two texts as ids.
    digest : str
        sha256 of the whole text (``pydoc_data.topics`` changes between CPython
        releases).
    """

    vocab: tuple
    train: np.ndarray
    valid: np.ndarray
    digest: str

    @property
    def vocab_size(self) -> int:
        """Number of symbols, the unknown one included."""
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        """Ids of ``text``; characters outside the vocabulary become 0."""
        index = {c: i for i, c in enumerate(self.vocab)}
        return np.fromiter((index.get(ch, 0) for ch in text), dtype=np.int64, count=len(text))

    def decode(self, ids) -> str:
        """The text of ``ids`` (unknown symbols as :data:`UNKNOWN`)."""
        return "".join(self.vocab[int(i)] for i in ids)

    def describe(self) -> dict:
        """Provenance: where the text came from and how it was split."""
        return {"corpus": "pydoc_data.topics (sorted keys, joined)",
                "python": sys.version.split()[0], "sha256": self.digest,
                "valid_fraction": VALID_FRACTION, "train_chars": int(self.train.size),
                "valid_chars": int(self.valid.size), "vocab": list(self.vocab)}


def load_corpus(valid_fraction: float = VALID_FRACTION, min_count: int = MIN_COUNT) -> Corpus:
    """CPython's pydoc topics as a character corpus (deterministic).

    Parameters
    ----------
    valid_fraction : float
        Fraction of the text, taken from its end, held out for validation.
    min_count : int
        Rarer characters (in the training text) map to the unknown symbol.

    Raises
    ------
    ValueError
        ``valid_fraction`` is not in (0, 1) or ``min_count`` is below 1.
    """
    if not 0 < valid_fraction < 1:
        raise ValueError(f"validation fraction must be between 0 and 1, not {valid_fraction!r}")
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"minimum count must be a positive integer, not {min_count!r}")
    from pydoc_data.topics import topics

    text = "".join(topics[key] for key in sorted(topics))
    cut = int(len(text) * (1 - valid_fraction))
    counts = Counter(text[:cut])
    vocab = (UNKNOWN, *sorted(ch for ch, n in counts.items() if n >= min_count and ch != UNKNOWN))
    corpus = Corpus(vocab, np.empty(0, np.int64), np.empty(0, np.int64),
                    hashlib.sha256(text.encode()).hexdigest())
    ids = corpus.encode(text)
    return Corpus(vocab, ids[:cut], ids[cut:], corpus.digest)


class CharLSTM(nn.Module):
    """One-hot characters → one-layer LSTM → Linear head (logits over the vocabulary).

    Parameters
    ----------
    vocab : int
        Symbols (the LSTM's input width and the head's output width).
    hidden : int
        LSTM hidden units.
    seed : int
        Seeds the initial weights.

    Raises
    ------
    ValueError
        ``vocab`` or ``hidden`` is not a positive integer.
    """

    def __init__(self, vocab: int, hidden: int, seed: int = 0):
        super().__init__()
        for name, v in (("vocabulary size", vocab), ("hidden size", hidden)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        self.vocab, self.hidden = vocab, hidden
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        self.lstm = nn.LSTM(vocab, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)
        torch.random.set_rng_state(gen_state)

    def forward(self, ids: torch.Tensor, state=None):
        """Logits ``(batch, time, vocab)`` for ids ``(batch, time)``, and the final
        ``(h, c)`` state."""
        x = nn.functional.one_hot(ids, self.vocab).float()
        out, state = self.lstm(x, state)
        return self.head(out), state


def train_lm(model: CharLSTM, ids, *, steps: int, batch: int = 32, seq_len: int = 64,
             lr: float = 3e-3, lr_end: float | None = None, clip: float = 1.0, seed: int = 0,
             desc: str = "train", progress: bool = False) -> float:
    """Train with truncated backpropagation through time.

    The text is cut into ``batch`` contiguous streams read ``seq_len`` characters at a
    time, the state carried (detached) from one window to the next. Each pass over the
    streams starts at a random offset below ``seq_len`` from a zero state. Adam with
    a cosine learning rate from ``lr`` to ``lr_end`` (default ``lr / 10``), gradient
    norm clipped at ``clip``. Pruned layers keep their masks.

    Parameters
    ----------
    model : CharLSTM
    ids : array of int
        The training text as symbol ids.
    steps : int
        Optimizer steps (windows of ``batch × seq_len`` characters).
    batch, seq_len : int
        Streams and window length.
    lr, lr_end : float
        Learning rate at the start and the end of the cosine schedule.
    clip : float
        Gradient-norm clip.
    seed : int
        Seeds the window offsets.
    desc, progress :
        tqdm label, and whether to show the bar.

    Returns
    -------
    float
        Mean training loss of the last 50 steps (nats per character).

    Raises
    ------
    ValueError
        ``ids`` is too short for ``batch`` streams of at least two windows.
    """
    ids = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    length = ids.numel() // batch
    if length < 2 * seq_len + 1:
        raise ValueError(f"{ids.numel()} ids are too few for {batch} streams of "
                         f"{2 * seq_len + 1} characters")
    streams = ids[:batch * length].reshape(batch, length)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    lr_end = lr / 10 if lr_end is None else lr_end
    model.train()
    losses, state, pos = [], None, length
    for step in tqdm(range(steps), desc=desc, leave=False, disable=not progress):
        if pos + seq_len + 1 > length:
            pos, state = int(torch.randint(seq_len, (1,), generator=gen)), None
        window = streams[:, pos:pos + seq_len + 1]
        pos += seq_len
        for group in opt.param_groups:
            group["lr"] = lr_end + (lr - lr_end) * 0.5 * (1 + math.cos(math.pi * step / steps))
        logits, state = model(window[:, :-1], state)
        state = tuple(s.detach() for s in state)
        loss = nn.functional.cross_entropy(logits.reshape(-1, model.vocab),
                                           window[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        losses.append(loss.item())
    return float(np.mean(losses[-50:]))


def perplexity(model: CharLSTM, ids, *, n_streams: int = 64) -> float:
    """Perplexity over a text cut by :func:`darbgen.sim.lstm_golden.stream_split` (each
    stream from a zero state), the same protocol as the integer model's.

    Parameters
    ----------
    model : CharLSTM
    ids : array of int
        The text as symbol ids.
    n_streams : int
        Streams the text is cut into (evaluated as one batch).

    Returns
    -------
    float
        ``exp`` of the mean cross-entropy per predicted character.
    """
    xs, ys = stream_split(ids, n_streams)
    model.eval()
    with torch.no_grad():
        logits, _ = model(torch.from_numpy(xs))
        nll = nn.functional.cross_entropy(logits.reshape(-1, model.vocab).double(),
                                          torch.from_numpy(ys).reshape(-1))
    return float(torch.exp(nll))


def gate_layer(model: CharLSTM) -> PrunableLayer:
    """The model's gate matrix as a :class:`~darbgen.pruning.methods.PrunableLayer`
    (``"lstm.l0"``: ``4·hidden × (vocab + hidden)``, biases summed)."""
    return next(layer for layer in prunable_layers(model) if layer.name == GATE_LAYER)


def prune_lstm(model: CharLSTM, train_ids, valid_ids, method: PruningMethod, *,
               steps: int = 3, finetune_steps: int = 300, seed: int = 0, lr: float = 1e-3,
               progress: bool = False) -> list[dict]:
    """Prune the gate matrix progressively with ``method``, fine-tuning with the mask fixed.

    Step ``s`` applies ``method.schedule(steps)[s]`` to the effective gate weights, then
    trains ``finetune_steps`` (seed ``seed + 1 + s``) and measures the validation
    perplexity. The head is not pruned.

    Parameters
    ----------
    model : CharLSTM
        Trained; pruned in place.
    train_ids, valid_ids : array of int
        Training and validation texts.
    method : PruningMethod
        The target (e.g. ``DARB(ratio=8)``); ``steps`` stages of ``method.schedule``.
    steps, finetune_steps : int
        Stages, and fine-tuning steps after each.
    seed : int
    lr : float
        Fine-tuning learning rate (cosine to a tenth, per stage).
    progress : bool

    Returns
    -------
    list of dict
        Per step: the method's parameters, the reached pruning ratio, the fine-tuning
        loss and the validation perplexity.
    """
    layer = gate_layer(model)
    log = []
    for step, m in enumerate(method.schedule(steps)):
        mask = layer.prune(m)
        loss = train_lm(model, train_ids, steps=finetune_steps, lr=lr, seed=seed + 1 + step,
                        desc=f"prune {step + 1}/{steps}", progress=progress)
        ratio = float(mask.size / mask.sum())
        log.append({"step": step, "params": m.params(), "pruning_ratio": ratio,
                    "loss": loss, "perplexity": perplexity(model, valid_ids)})
    return log


def export_lstm(model: CharLSTM, method: PruningMethod | None, *, weight_bits: int = 8,
                provenance: dict | None = None) -> Artifact:
    """The artifact of a (pruned) model: ``"lstm.l0"`` then ``"head"``.

    The gate layer is exported in ``method``'s layout (``None``: dense, block size 1);
    the head always dense with block size 1. Weights are int8 with per-row scales; the
    float biases travel with the layers (the gate's is ``b_ih + b_hh``).

    Raises
    ------
    ValueError
        A ``method`` is given but the gate matrix carries no mask.
    """
    gate = gate_layer(model)
    if method is None:
        w = gate.weight()
        rows = np.ones(w.shape[0], dtype=np.int64)
        sparse_gate = SparseLayer.from_float(GATE_LAYER, w, np.ones(w.shape, bool), rows, rows,
                                             weight_bits=weight_bits, method="dense",
                                             bias=gate.bias(), shape=w.shape)
    else:
        sparse_gate = export_layer(gate, method, weight_bits=weight_bits)
    with torch.no_grad():
        wh = model.head.weight.double().numpy()
        bh = model.head.bias.double().numpy()
    ones = np.ones(wh.shape[0], dtype=np.int64)
    head = SparseLayer.from_float(HEAD_LAYER, wh, np.ones(wh.shape, bool), ones, ones,
                                  weight_bits=weight_bits, method="dense", bias=bh)
    return Artifact([sparse_gate, head], dict(provenance or {}))

