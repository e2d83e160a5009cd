"""Fine-tuning after pruning: a small, deterministic CPU training loop with early stopping.

Data comes from ``load_finetune_data``: data as calibration and evaluation read it (data.load_dataset:
an ``.npz`` with arrays named like the model's forward arguments, a folder of them, ...) with integer
``labels``; validation from a second file or a seeded ``val_fraction`` split; batches read row by row,
never the whole file; or a hook ``pkg.mod:fn`` / ``file.py:fn``
returning ``(train_loader, val_loader)`` or ``(train_loader, val_loader, loss_fn)``. A loader
is anything re-iterable that yields ``(inputs, labels)``; inputs are a tensor, a tuple of
tensors in forward() order, or a dict keyed by argument name.

``finetune`` trains the module in place (Adam; L2 as Adam's weight decay, L1 as a penalty on
Conv/Linear weights; dropout and BatchNorm as the model defines them), evaluates the validation
loss after every epoch, keeps the best state and restores it at the end. Optional knowledge
distillation blends the task loss with a temperature-softened KL divergence to a teacher (the
unpruned model).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgeopt.config.settings import FinetuneConfig  # noqa: F401 (re-exported)
from edgeopt.data.dataset import Dataset
from edgeopt.data.readers import LABELS_KEY
from edgeopt.data.specs import InputSpec
from edgeopt.errors import InputError
from edgeopt.events import Events

LossFn = Callable[[Any, Any], Any]


class EpochRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epoch: int  # 1-based
    train_loss: float  # task loss (plus distillation), without the L1 penalty
    val_loss: float
    val_accuracy: float | None
    lr: float
    seconds: float


class FinetuneResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    curve: list[EpochRecord]
    best_epoch: int
    best_val_loss: float
    best_val_accuracy: float | None
    initial_val_loss: float
    initial_val_accuracy: float | None
    epochs_run: int
    stopped_early: bool
    distilled: bool
    checkpoint: str | None = None


@dataclass
class FinetuneData:
    """Train and validation loaders (re-iterable, yielding (inputs, labels)) and an optional loss."""

    train: Iterable[Any]
    val: Iterable[Any]
    loss: LossFn | None
    source: str
    train_count: int | None = None
    val_count: int | None = None
    num_classes_needed: int | None = None  # max label + 1, when the labels are known up front


class BatchLoader:
    """Batches of a data.Dataset as torch tensors, inputs in forward() order with their labels; reshuffled
    every epoch from a seeded generator. Only a batch's rows are read (data.Dataset.rows), so files are
    never loaded whole. ``index``: the dataset's samples this loader serves (a split)."""

    def __init__(self, dataset: Dataset, names: Sequence[str], batch_size: int, *, shuffle: bool, seed: int = 0,
                 index: np.ndarray | None = None) -> None:
        if dataset.labels is None:
            raise InputError(f"{dataset.source} has no labels", "fine-tuning needs integer class labels under "
                             f"the key '{LABELS_KEY}'")
        self.dataset, self.names = dataset, list(names)
        self.index = np.arange(dataset.count) if index is None else np.asarray(index, dtype=np.intp)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.rng = np.random.default_rng(seed)

    @classmethod
    def of_arrays(cls, arrays: Sequence[np.ndarray], labels: np.ndarray, batch_size: int, *, shuffle: bool,
                  seed: int = 0) -> BatchLoader:
        """A loader over arrays already in memory (inputs in forward() order)."""
        names = [f"input{i}" for i in range(len(arrays))]
        dataset = Dataset.from_arrays(dict(zip(names, arrays)), np.asarray(labels), source="arrays")
        return cls(dataset, names, batch_size, shuffle=shuffle, seed=seed)

    @property
    def labels(self) -> np.ndarray:
        assert self.dataset.labels is not None  # checked in __init__
        return self.dataset.labels[self.index]

    def __len__(self) -> int:
        return math.ceil(len(self.index) / self.batch_size)

    def numpy_batches(self) -> Iterator[tuple[list[np.ndarray], np.ndarray]]:
        """(inputs in forward() order, labels) per batch, as numpy arrays (for onnxruntime)."""
        count = len(self.index)
        order = self.index[self.rng.permutation(count)] if self.shuffle else self.index
        for start in range(0, count, self.batch_size):
            index = order[start:start + self.batch_size]
            if self.shuffle and len(index) == 1 and count > 1:
                continue  # a 1-sample training batch breaks BatchNorm in train mode
            feed, labels = self.dataset.rows(index)
            assert labels is not None  # checked in __init__
            yield [feed[name] for name in self.names], labels

    def __iter__(self) -> Iterator[tuple[tuple[Any, ...], Any]]:
        import torch

        for arrays, labels in self.numpy_batches():
            yield (tuple(torch.from_numpy(_writable(a)) for a in arrays),
                   torch.from_numpy(_writable(labels).astype(np.int64, copy=False)))


def _writable(array: np.ndarray) -> np.ndarray:
    return array if array.flags.writeable else array.copy()  # torch.from_numpy warns on read-only arrays


# ---------------------------------------------------------------------------------------------
# data


def load_finetune_data(spec: str | Path, inputs: Sequence[InputSpec], *, val: str | Path | None = None,
                       val_fraction: float = 0.2, batch_size: int = 32, seed: int = 0) -> FinetuneData:
    """Read fine-tuning data (see the module doc). ``inputs``: forward()'s arguments in order, with their
    per-sample shapes (axis 0 is the batch)."""
    from edgeopt.formats.sources import is_factory_spec

    text = str(spec)
    if is_factory_spec(text):
        if val is not None:
            raise InputError("a fine-tuning hook returns its own validation loader; a separate validation file "
                             "does not apply", "drop the validation file, or return it from the hook")
        return _from_hook(text)
    specs = [InputSpec(s.name, ("batch", *s.shape[1:]), s.dtype) for s in inputs]
    names = [s.name for s in specs]
    train = _read(Path(spec), specs)
    if val is not None:
        validation = _read(Path(val), specs)
        loaders = (BatchLoader(train, names, batch_size, shuffle=True, seed=seed),
                   BatchLoader(validation, names, batch_size, shuffle=False))
        source = f"{spec} (validation: {val})"
    else:
        if not (isinstance(val_fraction, (int, float)) and 0 < val_fraction < 1):
            raise InputError(f"the validation fraction must be between 0 and 1, got {val_fraction!r}",
                             "e.g. 0.2 holds out a fifth of the samples")
        count = train.count
        held = min(max(round(count * val_fraction), 1), count - 1) if count >= 2 else 0
        if held < 1:
            raise InputError(f"{spec} has {count} sample(s); fine-tuning needs at least 2 to hold some out",
                             "give more samples or a separate validation file")
        order = np.random.default_rng(seed).permutation(count)
        loaders = (BatchLoader(train, names, batch_size, shuffle=True, seed=seed, index=np.sort(order[held:])),
                   BatchLoader(train, names, batch_size, shuffle=False, index=np.sort(order[:held])))
        source = f"{spec} (validation: {held} samples held out, seed {seed})"
    labels = [loader.labels for loader in loaders]
    if min(int(x.min()) for x in labels) < 0:
        raise InputError(f"{spec}: labels must be >= 0, found {min(int(x.min()) for x in labels)}",
                         "use class indices 0..N-1")
    needed = max(int(x.max()) for x in labels) + 1
    return FinetuneData(loaders[0], loaders[1], None, source, len(loaders[0].index), len(loaders[1].index), needed)


def _read(path: Path, specs: Sequence[InputSpec]) -> Dataset:
    """The labelled samples at ``path``, read and checked by data.load_dataset (rows stay in the file)."""
    from edgeopt.data import load_dataset

    if not path.exists():
        raise InputError(f"fine-tuning data not found: {path}", "check the path")
    return load_dataset(path, list(specs), require_labels=True)


def _from_hook(spec: str) -> FinetuneData:
    from edgeopt.formats.torch import load_callable

    hook = load_callable(spec, "fine-tuning hook")
    try:
        returned = hook()
    except Exception as exc:
        raise InputError(f"fine-tuning hook {spec} raised {type(exc).__name__}: {exc}",
                         "the hook must build its loaders with no arguments") from None
    if not isinstance(returned, (tuple, list)) or len(returned) not in (2, 3):
        raise InputError(f"fine-tuning hook {spec} returned {type(returned).__name__}",
                         "return (train_loader, val_loader) or (train_loader, val_loader, loss_fn)")
    train, val = returned[0], returned[1]
    loss = returned[2] if len(returned) == 3 else None
    for label, loader in (("train", train), ("validation", val)):
        if not hasattr(loader, "__iter__") or iter(loader) is loader:
            raise InputError(f"fine-tuning hook {spec}: the {label} loader is not re-iterable",
                             "return a DataLoader or a list of (inputs, labels) batches, not a generator")
    if loss is not None and not callable(loss):
        raise InputError(f"fine-tuning hook {spec}: the loss is not callable", "return loss_fn(outputs, labels)")
    return FinetuneData(train, val, loss, f"hook {spec}")


# ---------------------------------------------------------------------------------------------
# training


def _arg_names(module: Any) -> list[str]:
    from edgeopt.formats.torch import forward_arg_names

    required, optional = forward_arg_names(module)
    return required + optional


def _split_batch(batch: Any, names: Sequence[str]) -> tuple[tuple[Any, ...], Any]:
    import torch

    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise InputError("a fine-tuning batch must be (inputs, labels)",
                         "make the loaders yield (inputs, labels) pairs")
    inputs, labels = batch
    if isinstance(inputs, dict):
        missing = [n for n in names if n not in inputs]
        if missing and len(inputs) != 1:
            raise InputError(f"a fine-tuning batch lacks input(s) {', '.join(missing)}",
                             f"key the inputs by forward()'s arguments: {', '.join(names)}")
        inputs = tuple(inputs[n] for n in names if n in inputs) or tuple(inputs.values())
    elif not isinstance(inputs, (tuple, list)):
        inputs = (inputs,)
    as_tensor = (lambda v: torch.from_numpy(np.asarray(v)) if not isinstance(v, torch.Tensor) else v)
    return tuple(as_tensor(v) for v in inputs), (as_tensor(labels) if labels is not None else None)


def _first_tensor(outputs: Any) -> Any:
    from edgeopt.stages.prune.structured import flat_tensors

    tensors = flat_tensors(outputs)
    if not tensors:
        raise InputError("the model returned no tensors", "forward() must return tensors")
    return tensors[0]


def check_labels(labels: Any, num_outputs: int, where: str = "fine-tuning data") -> None:
    """Class labels must index the model's output; say both numbers when they do not."""
    if labels is None or labels.dtype.is_floating_point or labels.numel() == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_outputs:
        bad = high if high >= num_outputs else low
        raise InputError(f"{where} has label {bad}, but the model has {num_outputs} outputs "
                         f"(classes 0..{num_outputs - 1})",
                         "the labels must index the model's output; check the data matches this model")


class _Trainer:
    def __init__(self, module: Any, config: FinetuneConfig, loss: LossFn | None, teacher: Any) -> None:
        import torch

        self.torch = torch
        self.module = module
        self.config = config
        self.loss = loss
        self.teacher = teacher.eval() if teacher is not None and config.distill_weight > 0 else None
        self.names = _arg_names(module)
        self.checked_outputs: int | None = None
        self.l1_params = [m.weight for m in module.modules()
                          if isinstance(m, (torch.nn.modules.conv._ConvNd, torch.nn.Linear))]

    def task_loss(self, outputs: Any, labels: Any) -> Any:
        if self.loss is not None:
            return self.loss(outputs, labels)
        logits = _first_tensor(outputs)
        if self.checked_outputs is None:
            if logits.dim() != 2 or labels is None or labels.dtype.is_floating_point:
                raise InputError(
                    f"the default loss is classification cross-entropy, which needs [batch, classes] outputs and "
                    f"integer labels; got outputs {list(logits.shape)} and "
                    f"{'no labels' if labels is None else f'{labels.dtype} labels'}",
                    "give a hook module:function that returns (train_loader, val_loader, loss_fn)")
            self.checked_outputs = logits.shape[1]
        check_labels(labels, logits.shape[1])
        return self.torch.nn.functional.cross_entropy(logits, labels.long())

    def distill_loss(self, outputs: Any, inputs: tuple[Any, ...]) -> Any:
        F, torch = self.torch.nn.functional, self.torch
        with torch.no_grad():
            target = _first_tensor(self.teacher(*inputs))
        student = _first_tensor(outputs)
        temperature = self.config.temperature
        # T² keeps the soft-target gradients on the scale of the hard-label ones (Hinton et al.).
        return F.kl_div(F.log_softmax(student / temperature, dim=-1), F.log_softmax(target / temperature, dim=-1),
                        reduction="batchmean", log_target=True) * temperature ** 2

    def train_epoch(self, loader: Iterable[Any], optimizer: Any, bar: Callable[[], None]) -> float:
        torch = self.torch
        self.module.train()
        total, count = 0.0, 0
        weight = self.config.distill_weight if self.teacher is not None else 0.0
        for batch in loader:
            inputs, labels = _split_batch(batch, self.names)
            optimizer.zero_grad(set_to_none=True)
            outputs = self.module(*inputs)
            loss = self.task_loss(outputs, labels) if weight < 1 else torch.zeros(())
            if weight > 0:
                loss = (1 - weight) * loss + weight * self.distill_loss(outputs, inputs)
            objective = loss
            if self.config.l1 > 0:
                objective = objective + self.config.l1 * sum(p.abs().sum() for p in self.l1_params)
            if not torch.isfinite(objective):
                raise InputError("the training loss became NaN/Inf", "lower the learning rate (--lr)")
            objective.backward()
            optimizer.step()
            size = int(labels.shape[0]) if labels is not None and labels.dim() else 1
            total += float(loss.detach()) * size
            count += size
            bar()
        if count == 0:
            raise InputError("the training loader yielded no batches", "give at least 2 training samples")
        return total / count

    def evaluate(self, loader: Iterable[Any]) -> tuple[float, float | None]:
        torch = self.torch
        self.module.eval()
        total, count, correct, classified = 0.0, 0, 0, True
        with torch.no_grad():
            for batch in loader:
                inputs, labels = _split_batch(batch, self.names)
                outputs = self.module(*inputs)
                loss = self.task_loss(outputs, labels)
                size = int(labels.shape[0]) if labels is not None and labels.dim() else 1
                total += float(loss) * size
                count += size
                logits = _first_tensor(outputs)
                if labels is not None and logits.dim() == 2 and not labels.dtype.is_floating_point \
                        and labels.dim() == 1:
                    correct += int((logits.argmax(dim=1) == labels).sum())
                else:
                    classified = False
        if count == 0:
            raise InputError("the validation loader yielded no batches", "give at least one validation sample")
        return total / count, (correct / count if classified else None)


def evaluate(module: Any, loader: Iterable[Any], *, loss: LossFn | None = None) -> tuple[float, float | None]:
    """(mean loss, accuracy or None) of ``module`` on ``loader`` (eval mode, no gradients)."""
    return _Trainer(module, FinetuneConfig(), loss, None).evaluate(loader)


@contextlib.contextmanager
def _threads(count: int | None) -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _scheduler(optimizer: Any, config: FinetuneConfig) -> Any:
    import torch

    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    if config.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, config.epochs // 3), gamma=0.1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _epoch: 1.0)


def finetune(
    module: Any,
    train: Iterable[Any],
    val: Iterable[Any],
    config: FinetuneConfig,
    *,
    teacher: Any = None,
    loss: LossFn | None = None,
    events: Events | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    checkpoint_path: Path | None = None,
) -> FinetuneResult:
    """Train ``module`` in place; on return it holds the weights of the best validation loss
    (the state before training if no epoch improved on it). ``teacher`` with
    ``config.distill_weight > 0`` adds distillation. ``events`` hears each batch (progress within the
    epoch) and each epoch's losses; ``on_epoch`` gets each epoch's record; ``checkpoint_path`` receives the best
    state_dict (torch.save, written atomically) whenever it improves."""
    import torch

    trainer = _Trainer(module, config, loss, teacher)
    with _threads(config.threads):
        torch.manual_seed(config.seed)
        initial_loss, initial_accuracy = trainer.evaluate(val)
        if trainer.checked_outputs is not None:  # whole label arrays known: refuse before any training
            for where, loader in (("training data", train), ("validation data", val)):
                if isinstance(loader, BatchLoader):
                    check_labels(torch.from_numpy(loader.labels), trainer.checked_outputs, where)
        best_loss, best_accuracy, best_epoch = initial_loss, initial_accuracy, 0
        best_state = copy.deepcopy(module.state_dict())
        optimizer = torch.optim.Adam(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        scheduler = _scheduler(optimizer, config)
        curve: list[EpochRecord] = []
        stale = 0
        events = events or Events()
        for epoch in range(1, config.epochs + 1):
            started = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            train_loss = trainer.train_epoch(train, optimizer, _batch_counter(events, epoch, config.epochs,
                                                                             _length(train)))
            val_loss, val_accuracy = trainer.evaluate(val)
            scheduler.step()
            record = EpochRecord(epoch=epoch, train_loss=train_loss, val_loss=val_loss,
                                 val_accuracy=val_accuracy, lr=lr, seconds=time.perf_counter() - started)
            curve.append(record)
            accuracy = f", val accuracy {record.val_accuracy:.4f}" if record.val_accuracy is not None else ""
            events.note(f"fine-tune epoch {record.epoch}/{config.epochs}: train loss {record.train_loss:.4f}, "
                        f"val loss {record.val_loss:.4f}{accuracy}")
            if on_epoch is not None:
                on_epoch(record)
            if val_loss < best_loss - config.min_delta:
                best_loss, best_accuracy, best_epoch, stale = val_loss, val_accuracy, epoch, 0
                best_state = copy.deepcopy(module.state_dict())
                if checkpoint_path is not None:
                    _save_checkpoint(best_state, Path(checkpoint_path))
            else:
                stale += 1
                if stale >= config.patience:
                    break
        module.load_state_dict(best_state)
        module.eval()
    return FinetuneResult(curve=curve, best_epoch=best_epoch, best_val_loss=best_loss,
                          best_val_accuracy=best_accuracy, initial_val_loss=initial_loss,
                          initial_val_accuracy=initial_accuracy, epochs_run=len(curve),
                          stopped_early=len(curve) < config.epochs,
                          distilled=trainer.teacher is not None,
                          checkpoint=str(checkpoint_path) if checkpoint_path is not None and best_epoch else None)


def _length(loader: Any) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


def _save_checkpoint(state: dict[str, Any], path: Path) -> None:
    import torch

    from edgeopt.fsutil import atomic_path

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _batch_counter(events: Events, epoch: int, epochs: int, length: int | None) -> Callable[[], None]:
    """Called after every batch: progress within the epoch (a bar in the CLI)."""
    done = 0

    def advance() -> None:
        nonlocal done
        done += 1
        events.progress(done, length or done, f"fine-tune epoch {epoch}/{epochs}")

    return advance
