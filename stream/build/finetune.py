"""Build time: multi-task fine-tuning of the text encoder on CPU before it is exported.

One shared encoder (the worker runs one encoder for all heads) with one linear head per task on
the *normalised mean-pooled* token states, exactly the features the runtime pools, so a head on
the exported encoder keeps its exact token rationale. The heads trained here only steer the
encoder; the bundle's heads are fitted afterwards on the int8 export (:mod:`stream.build.train`).

Training rows are the union of both tasks' train splits, one row per distinct text carrying the
label of each task it has (a missing label is ignored by that task's loss). CrisisMMD's splits are
task-specific: 664 humanitarian test tweets sit in the informative train split and 669
informative test tweets in the humanitarian one. A shared encoder trained on both would see the
other task's test tweets, so every text of any dev or test split is dropped from training.

Speed on a 2-core CPU: length-bucketed batches (little padding), ``max_length`` 64 (99% of the
tweets are shorter), frozen word embeddings (no Adam state for 12M of the 22M weights). The epoch
with the best mean dev macro-F1 (fine-tuned heads, torch fp32) is kept. Deterministic: fixed
seeds, ``torch.use_deterministic_algorithms`` and a fixed thread count.

torch and transformers are imported lazily: they are build-time extras the worker never loads.
"""

from __future__ import annotations

import importlib
import os
import random
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stream.build.export import input_names, load_transformer
from stream.data.crisismmd import CrisisRow
from stream.errors import MissingExtraError
from stream.evaluation.metrics import macro_f1
from stream.models.text import pad_batch

__all__ = ["FinetuneConfig", "FinetuneResult", "finetune", "training_rows"]

IGNORE = -100
Progress = Callable[[str], None]


@dataclass(frozen=True)
class FinetuneConfig:
    """Hyper-parameters, chosen on the agreed dev splits."""

    epochs: int = 3
    lr: float = 5e-5
    head_lr: float = 2e-3
    batch_size: int = 32
    max_length: int = 64
    warmup: float = 0.1
    weight_decay: float = 0.01
    class_weight: bool = True  # balanced (inverse-frequency) loss weights per task
    freeze_embeddings: bool = True
    scale: float = 20.0  # normalised embedding -> logit multiplier of the training heads
    seed: int = 0
    threads: int = 2


@dataclass
class FinetuneResult:
    """Where the fine-tuned weights are, and what the manifest records about the run."""

    model_dir: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    heads: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # W, b


def training_rows(
    train: Mapping[str, Sequence[CrisisRow]],
    held_out: Sequence[CrisisRow],
    labels: dict[str, list[str]],
) -> tuple[list[str], np.ndarray, int]:
    """Distinct train texts (sorted) and their label index per task ([N, tasks], IGNORE where a
    task has no label), minus every text in ``held_out``; also how many texts were dropped."""
    banned = {r.text for r in held_out}
    tasks = list(labels)
    table: dict[str, list[int]] = {}
    dropped: set[str] = set()
    for t, task in enumerate(tasks):
        index = {name: i for i, name in enumerate(labels[task])}
        for r in train[task]:
            if r.text in banned:
                dropped.add(r.text)
                continue
            table.setdefault(r.text, [IGNORE] * len(tasks))[t] = index[r.label]
    texts = sorted(table)
    return texts, np.array([table[x] for x in texts], np.int64), len(dropped)


def _batches(lengths: np.ndarray, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Length-bucketed batches in random order: sort by length plus noise, cut, shuffle."""
    order = np.argsort(lengths + rng.uniform(0, 4, len(lengths)), kind="stable")
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _tensors(torch: Any, encs: Sequence[Any], idx: Sequence[int]) -> tuple[Any, Any]:
    ids, mask = pad_batch([encs[i] for i in idx])
    return torch.from_numpy(ids), torch.from_numpy(mask)


def _pooled(torch: Any, bert: Any, ids: Any, mask: Any) -> Any:
    """Normalised mean of the token states over real tokens: what the runtime computes."""
    feeds = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in input_names(bert):
        feeds["token_type_ids"] = torch.zeros_like(ids)
    states = bert(**feeds)
    m = mask.unsqueeze(-1).to(states.last_hidden_state.dtype)
    mean = (states.last_hidden_state * m).sum(1) / m.sum(1).clamp(min=1.0)
    return torch.nn.functional.normalize(mean, dim=-1)


def _import_training() -> tuple[Any, Any, Any]:
    """torch, transformers and the ``tokenizers.Tokenizer`` class (the build extra)."""
    try:
        torch: Any = importlib.import_module("torch")
        transformers: Any = importlib.import_module("transformers")
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise MissingExtraError(exc.name or "torch", "build") from exc
    return torch, transformers, Tokenizer


def _make_deterministic(torch: Any, transformers: Any, cfg: FinetuneConfig) -> np.random.Generator:
    """Fixed threads, seeds and algorithms, quiet transformers; the batch order's generator."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    rng = np.random.default_rng(cfg.seed)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return rng


def _zero_heads(torch: Any, hidden: int, sizes: Sequence[int]) -> Any:
    """One linear head per task (``sizes``: labels per task), starting at zero."""
    heads = torch.nn.ModuleList(torch.nn.Linear(hidden, n) for n in sizes)
    for h in heads:
        torch.nn.init.zeros_(h.weight)
        torch.nn.init.zeros_(h.bias)
    return heads


def _unpadded(tokenizer_cls: Any, tokenizer: Path, max_length: int) -> Any:
    tok = tokenizer_cls.from_file(str(tokenizer))
    tok.no_padding()
    tok.enable_truncation(max_length)
    return tok


def _class_weights(
    torch: Any, y: np.ndarray, tasks: list[str], labels: dict[str, list[str]], balanced: bool
) -> list[Any]:
    """Per task, balanced (inverse-frequency) loss weights, or None when not ``balanced``."""
    weights = []
    for t, task in enumerate(tasks):
        counts = np.bincount(y[:, t][y[:, t] >= 0], minlength=len(labels[task])).astype(float)
        w = counts.sum() / (len(counts) * np.maximum(counts, 1)) if balanced else None
        weights.append(None if w is None else torch.tensor(w, dtype=torch.float32))
    return weights


@dataclass
class _DevSet:
    """The dev splits' distinct texts, encoded at the runtime's length."""

    rows: Mapping[str, Sequence[CrisisRow]]
    texts: list[str]
    encs: list[Any]
    index: dict[str, int]


def _dev_set(tok: Any, dev: Mapping[str, Sequence[CrisisRow]]) -> _DevSet:
    texts = sorted({r.text for rows in dev.values() for r in rows})
    return _DevSet(dev, texts, tok.encode_batch(texts), {x: i for i, x in enumerate(texts)})


def _dev_metrics(
    torch: Any,
    bert: Any,
    heads: Any,
    devset: _DevSet,
    tasks: list[str],
    labels: dict[str, list[str]],
    scale: float,
) -> dict[str, Any]:
    """Accuracy and macro-F1 of each fine-tuning head on its dev split."""
    bert.eval()
    order = np.argsort([len(e.ids) for e in devset.encs], kind="stable")
    emb = torch.zeros(len(devset.texts), bert.config.hidden_size)
    with torch.no_grad():
        for i in range(0, len(order), 64):
            idx = order[i : i + 64].tolist()
            emb[idx] = _pooled(torch, bert, *_tensors(torch, devset.encs, idx))
    out: dict[str, Any] = {}
    for t, task in enumerate(tasks):
        rows = devset.rows[task]
        yt = np.array([labels[task].index(r.label) for r in rows])
        x = emb[[devset.index[r.text] for r in rows]]
        with torch.no_grad():
            pred = heads[t](x * scale).argmax(1).numpy()
        out[task] = {
            "accuracy": round(float((pred == yt).mean()), 4),
            "macro_f1": round(macro_f1(yt, pred), 4),
        }
    bert.train()
    return out


def _optimizer(
    torch: Any, bert: Any, heads: Any, cfg: FinetuneConfig, n_texts: int
) -> tuple[Any, Any, int]:
    """AdamW (no weight decay on biases and LayerNorm), its warm-up then linear-decay schedule,
    and the steps per epoch."""
    decay = [
        p
        for n, p in bert.named_parameters()
        if p.requires_grad and "LayerNorm" not in n and "bias" not in n
    ]
    no_decay = [
        p
        for n, p in bert.named_parameters()
        if p.requires_grad and ("LayerNorm" in n or "bias" in n)
    ]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "lr": cfg.lr, "weight_decay": 0.0},
            {"params": list(heads.parameters()), "lr": cfg.head_lr, "weight_decay": 0.0},
        ]
    )
    steps_per_epoch = -(-n_texts // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warm = max(1, int(cfg.warmup * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm)))
    )
    return opt, sched, steps_per_epoch


def _batch_loss(
    torch: Any, heads: Any, emb: Any, y: Any, idx: np.ndarray, weights: list[Any], n_tasks: int
) -> Any:
    """The sum over tasks of each task's mean cross-entropy on the rows labelled for it."""
    loss = emb.new_zeros(())
    for t in range(n_tasks):
        yt = y[idx, t]
        if bool((yt >= 0).any()):
            ce = torch.nn.functional.cross_entropy(
                heads[t](emb), yt, weight=weights[t], ignore_index=IGNORE, reduction="sum"
            )
            loss = loss + ce / max(1, int((yt >= 0).sum()))
    return loss


def _snapshot(module: Any) -> dict[str, Any]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _save_model(bert: Any, tokenizer: Path, out_dir: Path) -> None:
    """Writes ``out_dir`` afresh: a ``from_pretrained`` directory with the tokenizer."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    bert.save_pretrained(str(out_dir))
    shutil.copyfile(tokenizer, out_dir / "tokenizer.json")


def _head_arrays(
    heads: Any, tasks: list[str], scale: float
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each task's head as float32 weights (with the logit ``scale`` folded in) and bias."""
    return {
        task: (
            (heads[t].weight.detach().numpy() * scale).astype(np.float32),
            heads[t].bias.detach().numpy().astype(np.float32),
        )
        for t, task in enumerate(tasks)
    }


def finetune(
    train: Mapping[str, Sequence[CrisisRow]],
    dev: Mapping[str, Sequence[CrisisRow]],
    held_out: Sequence[CrisisRow],
    labels: dict[str, list[str]],
    source_dir: Path,
    out_dir: Path,
    progress: Progress,
    config: FinetuneConfig | None = None,
    tokenizer: Path | None = None,
) -> FinetuneResult:
    """Fine-tune the encoder in ``source_dir`` on ``train`` (per task), pick the epoch on
    ``dev`` (the last one when ``dev`` is empty), write it with its tokenizer (``tokenizer``,
    default the one in ``source_dir``) to ``out_dir`` (a ``from_pretrained`` directory)."""
    cfg = config or FinetuneConfig()
    tokenizer = tokenizer or source_dir / "tokenizer.json"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch, transformers, tokenizer_cls = _import_training()
    t0 = time.perf_counter()
    rng = _make_deterministic(torch, transformers, cfg)
    bert = load_transformer(transformers, source_dir)
    tasks = list(labels)
    heads = _zero_heads(torch, bert.config.hidden_size, [len(labels[t]) for t in tasks])
    if cfg.freeze_embeddings:
        bert.embeddings.word_embeddings.weight.requires_grad_(False)

    texts, y, dropped = training_rows(train, held_out, labels)
    encs = _unpadded(tokenizer_cls, tokenizer, cfg.max_length).encode_batch(texts)
    lengths = np.array([len(e.ids) for e in encs], np.float64)
    weights = _class_weights(torch, y, tasks, labels, cfg.class_weight)
    progress(
        f"fine-tuning on {len(texts)} distinct train texts ({dropped} dropped: in a dev/test "
        f"split); {cfg.epochs} epochs, lr {cfg.lr}, max_length {cfg.max_length}"
    )
    devset = _dev_set(_unpadded(tokenizer_cls, tokenizer, 128), dev)  # the runtime's length

    opt, sched, steps_per_epoch = _optimizer(torch, bert, heads, cfg, len(texts))
    history: list[dict[str, Any]] = []
    best: tuple[float, int, dict[str, Any], dict[str, Any]] | None = None
    bert.train()
    yt_all = torch.from_numpy(y)
    t_train, total_steps = time.perf_counter(), steps_per_epoch * cfg.epochs
    for epoch in range(1, cfg.epochs + 1):
        te, running, n = time.perf_counter(), 0.0, 0
        for b, idx in enumerate(_batches(lengths, cfg.batch_size, rng)):
            ids, mask = _tensors(torch, encs, idx.tolist())
            emb = _pooled(torch, bert, ids, mask) * cfg.scale
            loss = _batch_loss(torch, heads, emb, yt_all, idx, weights, len(tasks))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(bert.parameters(), 1.0)
            opt.step()
            sched.step()
            running, n = running + float(loss.detach()), n + 1
            if b % 50 == 0:
                done = (epoch - 1) * steps_per_epoch + b + 1
                eta = (time.perf_counter() - t_train) / done * (total_steps - done)
                progress(
                    f"epoch {epoch} step {b}/{steps_per_epoch} loss {running / n:.3f}; "
                    f"ETA {eta / 60:.1f} min"
                )
        metrics: dict[str, Any] = {}
        score = float(epoch)  # no dev split: the last epoch
        if devset.texts:
            metrics = _dev_metrics(torch, bert, heads, devset, tasks, labels, cfg.scale)
            score = float(np.mean([m["macro_f1"] for m in metrics.values()]))
        history.append(
            {
                "epoch": epoch,
                "train_loss": round(running / n, 4),
                "seconds": round(time.perf_counter() - te, 1),
                "dev": metrics,
            }
        )
        progress(f"epoch {epoch}: {history[-1]}")
        if best is None or score > best[0]:
            best = (score, epoch, _snapshot(bert), _snapshot(heads))
    assert best is not None
    bert.load_state_dict(best[2])
    heads.load_state_dict(best[3])
    _save_model(bert, tokenizer, out_dir)
    manifest = {
        "config": asdict(cfg),
        "train_texts": len(texts),
        "dropped_in_dev_or_test": dropped,
        "steps_per_epoch": steps_per_epoch,
        "epochs_run": cfg.epochs,
        "selected_epoch": best[1],
        "selection": "epoch with the best mean dev macro-F1 of the fine-tuning heads"
        if devset.texts
        else "the last epoch (no dev split)",
        "history": history,
        "seconds": round(time.perf_counter() - t0, 1),
        "torch": torch.__version__,
    }
    return FinetuneResult(out_dir, manifest, _head_arrays(heads, tasks, cfg.scale))
