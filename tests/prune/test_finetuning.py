"""Fine-tuning: data loading and refusals, early stopping, best state restored, determinism,
hooks with their own loss, distillation."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.errors import InputError
from edgeopt.data.specs import InputSpec
from edgeopt.stages.prune.finetuning import BatchLoader, FinetuneConfig, evaluate, finetune, load_finetune_data

torch = pytest.importorskip("torch")
nn = torch.nn


FEATURES = [InputSpec("features", (1, 6), "float32")]  # forward()'s argument at the run's resolved shape


def _blobs(count: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated classes in 6-D: easy to learn in a few epochs."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, count)
    centers = rng.standard_normal((3, 6)) * 3
    return (centers[labels] + rng.standard_normal((count, 6))).astype(np.float32), labels.astype(np.int64)


class _MLP(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.drop = nn.Dropout(0.1)
        self.fc2 = nn.Linear(16, classes)

    def forward(self, features):
        return self.fc2(self.drop(torch.relu(self.fc1(features))))


def _model(classes: int = 3) -> _MLP:
    torch.manual_seed(0)
    return _MLP(classes)


@pytest.fixture
def blobs_npz(tmp_path):
    x, y = _blobs()
    path = tmp_path / "train.npz"
    np.savez(path, features=x, labels=y)
    return path


def test_training_improves_and_keeps_the_best_state(blobs_npz):
    data = load_finetune_data(blobs_npz, FEATURES, val_fraction=0.25, batch_size=32, seed=0)
    assert (data.train_count, data.val_count) == (180, 60)
    model = _model()
    seen = []
    result = finetune(model, data.train, data.val, FinetuneConfig(epochs=8, lr=0.01, patience=8),
                      on_epoch=seen.append)
    assert len(seen) == result.epochs_run == len(result.curve)
    assert result.best_val_loss < result.initial_val_loss / 2
    assert result.best_val_accuracy is not None and result.best_val_accuracy > 0.9
    # The restored weights are the best epoch's: evaluating again gives its loss.
    loss, accuracy = evaluate(model, data.val)
    assert loss == pytest.approx(result.best_val_loss, rel=1e-5)
    assert accuracy == result.best_val_accuracy
    assert result.curve[result.best_epoch - 1].val_loss == result.best_val_loss


def test_early_stopping_stops_on_a_plateau(blobs_npz):
    data = load_finetune_data(blobs_npz, FEATURES)
    model = _model()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    # A learning rate this small cannot move the validation loss by min_delta: a plateau.
    config = FinetuneConfig(epochs=30, lr=1e-9, patience=2, min_delta=1e-3)
    result = finetune(model, data.train, data.val, config)
    assert result.stopped_early and result.epochs_run == 2 < config.epochs
    assert result.best_epoch == 0
    assert all(torch.equal(v, initial[k]) for k, v in model.state_dict().items())


def test_deterministic_with_a_seed(blobs_npz):
    curves = []
    for _ in range(2):
        data = load_finetune_data(blobs_npz, FEATURES, seed=3)
        result = finetune(_model(), data.train, data.val, FinetuneConfig(epochs=3, seed=3, patience=5))
        curves.append([(r.train_loss, r.val_loss) for r in result.curve])
    assert curves[0] == curves[1]


def test_labels_beyond_the_output_size_refused(tmp_path):
    x, y = _blobs()
    y[5] = 11
    path = tmp_path / "bad.npz"
    np.savez(path, features=x, labels=y)
    data = load_finetune_data(path, FEATURES, seed=0)
    with pytest.raises(InputError, match=r"label 11, but the model has 3 outputs"):
        finetune(_model(3), data.train, data.val, FinetuneConfig(epochs=1))


def test_data_refusals(tmp_path):
    """Fine-tuning data is read as calibration and evaluation data are (data.load_dataset): the same checks
    and messages, plus the class-index rule of a classification loss."""
    x, y = _blobs(20)
    cases = {
        "nolabels.npz": (dict(features=x), "has no labels, but labels are required"),
        "onehot.npz": (dict(features=x, labels=np.eye(3, dtype=np.float32)[y]), "one-hot"),
        "names.npz": (dict(a=x, b=x, labels=y), "no array for input 'features'.*arrays in the file: a, b"),
        "count.npz": (dict(features=x[:10], labels=y), "'labels' has 20 entries but the data has 10 samples"),
        "nan.npz": (dict(features=np.full_like(x, np.nan), labels=y), "NaN"),
        "negative.npz": (dict(features=x, labels=y - 5), "labels must be >= 0"),
    }
    for name, (arrays, message) in cases.items():
        np.savez(tmp_path / name, **arrays)
        with pytest.raises(InputError, match=message):
            load_finetune_data(tmp_path / name, FEATURES)
    with pytest.raises(InputError, match="not found"):
        load_finetune_data(tmp_path / "missing.npz", FEATURES)
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(InputError, match="not an .npz or .npy"):
        load_finetune_data(tmp_path / "data.csv", FEATURES)


def test_separate_validation_file_and_a_folder_of_files(tmp_path):
    x, y = _blobs(40)
    np.savez(tmp_path / "t.npz", features=x, labels=y)
    np.savez(tmp_path / "v.npz", features=x[:8], labels=y[:8])
    data = load_finetune_data(tmp_path / "t.npz", FEATURES, val=tmp_path / "v.npz")
    assert (data.train_count, data.val_count) == (40, 8)
    # a folder of .npz files, as --calib reads it: the batches hold the rows of both files
    (tmp_path / "parts").mkdir()
    np.savez(tmp_path / "parts" / "a.npz", features=x[:25], labels=y[:25])
    np.savez(tmp_path / "parts" / "b.npz", features=x[25:], labels=y[25:])
    data = load_finetune_data(tmp_path / "parts", FEATURES, val=tmp_path / "v.npz")
    assert data.train_count == 40
    seen = np.concatenate([labels.numpy() for _, labels in data.train])
    assert sorted(seen.tolist()) == sorted(y.tolist())


def test_default_loss_needs_class_outputs(blobs_npz):
    class Regressor(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 1)

        def forward(self, features):
            return self.fc(features).squeeze(1)

    data = load_finetune_data(blobs_npz, FEATURES)
    with pytest.raises(InputError, match="cross-entropy.*hook"):
        finetune(Regressor(), data.train, data.val, FinetuneConfig(epochs=1))


HOOK = '''
import numpy as np
import torch

CALLS = []


def loss(outputs, labels):
    CALLS.append(1)
    return torch.nn.functional.mse_loss(outputs[:, 0], labels)


def loaders():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((64, 6)).astype(np.float32))
    y = x.sum(dim=1)
    train = [({"features": x[i:i + 16]}, y[i:i + 16]) for i in range(0, 48, 16)]
    val = [(x[48:], y[48:])]
    return train, val, loss


def not_loaders():
    return 42
'''


def test_hook_with_its_own_loss(tmp_path):
    hook = tmp_path / "ft_hook.py"
    hook.write_text(HOOK)
    data = load_finetune_data(f"{hook}:loaders", FEATURES)
    assert data.loss is not None and data.source.startswith("hook")
    result = finetune(_model(1), data.train, data.val, FinetuneConfig(epochs=3, lr=0.01, patience=3),
                      loss=data.loss)
    assert result.best_val_accuracy is None  # a regression: no accuracy
    assert result.best_val_loss < result.initial_val_loss
    with pytest.raises(InputError, match="returned int"):
        load_finetune_data(f"{hook}:not_loaders", FEATURES)
    with pytest.raises(InputError, match="no callable 'missing'"):
        load_finetune_data(f"{hook}:missing", FEATURES)


def test_distillation_from_a_teacher(tmp_path):
    """The student's training labels are shuffled, so only the teacher can teach it: with distillation alone
    (weight 1) it learns the classes; trained on those labels it does not. A distillation loss that did
    nothing would fail the first half."""
    x, y = _blobs()
    truth, shuffled, val = tmp_path / "truth.npz", tmp_path / "shuffled.npz", tmp_path / "val.npz"
    np.savez(truth, features=x[:180], labels=y[:180])
    np.savez(shuffled, features=x[:180], labels=np.random.default_rng(5).permutation(y[:180]))
    np.savez(val, features=x[180:], labels=y[180:])
    teacher = _model()
    finetune(teacher, load_finetune_data(truth, FEATURES, val=val).train, load_finetune_data(truth, FEATURES, val=val).val,
             FinetuneConfig(epochs=8, lr=0.01, patience=8))
    assert evaluate(teacher, load_finetune_data(truth, FEATURES, val=val).val)[1] > 0.9
    data = load_finetune_data(shuffled, FEATURES, val=val)
    students = {}
    for weight in (1.0, 0.0):
        torch.manual_seed(1)
        students[weight] = _MLP()
        result = finetune(students[weight], data.train, data.val,
                          FinetuneConfig(epochs=8, lr=0.01, patience=8, distill_weight=weight, temperature=2.0),
                          teacher=teacher)
        assert result.distilled == (weight > 0)
    assert evaluate(students[1.0], data.val)[1] > 0.9
    assert evaluate(students[0.0], data.val)[1] < 0.7


def test_l2_weight_decay_shrinks_weights(blobs_npz):
    data = load_finetune_data(blobs_npz, FEATURES)
    plain, decayed = _model(), _model()
    finetune(plain, data.train, data.val, FinetuneConfig(epochs=3, lr=0.01, patience=3))
    finetune(decayed, data.train, data.val, FinetuneConfig(epochs=3, lr=0.01, patience=3, weight_decay=0.5))
    assert decayed.fc1.weight.square().sum() < 0.8 * plain.fc1.weight.square().sum()


def test_l1_shrinks_weights_and_checkpoint_written(blobs_npz, tmp_path):
    data = load_finetune_data(blobs_npz, FEATURES)
    plain, sparse = _model(), _model()
    finetune(plain, data.train, data.val, FinetuneConfig(epochs=3, lr=0.01, patience=3))
    checkpoint = tmp_path / "best.pt"
    result = finetune(sparse, data.train, data.val, FinetuneConfig(epochs=3, lr=0.01, patience=3, l1=1e-2),
                      checkpoint_path=checkpoint)
    assert sparse.fc1.weight.abs().sum() < plain.fc1.weight.abs().sum()
    assert result.checkpoint == str(checkpoint)
    saved = torch.load(checkpoint, weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in sparse.state_dict().items())


def test_array_loader_drops_lonely_training_samples():
    x, y = _blobs(33)
    batches = list(BatchLoader.of_arrays([x], y, 16, shuffle=True))
    assert [len(labels) for _, labels in batches] == [16, 16]
    assert [len(labels) for _, labels in BatchLoader.of_arrays([x], y, 16, shuffle=False)] == [16, 16, 1]


def test_progress_is_events_per_batch_and_per_epoch_never_drawn(blobs_npz, capsys):
    from edgeopt.events import Events

    data = load_finetune_data(blobs_npz, FEATURES)
    heard = []
    finetune(_model(), data.train, data.val, FinetuneConfig(epochs=2, patience=2), events=Events(heard.append))
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""  # the library draws nothing; the CLI renders events
    batches = len(data.train)
    progress = [(e.done, e.total, e.message) for e in heard if e.kind == "progress"]
    assert progress[:batches] == [(i, batches, "fine-tune epoch 1/2") for i in range(1, batches + 1)]
    notes = [e.message for e in heard if e.kind == "note"]
    assert len(notes) == 2 and notes[1].startswith("fine-tune epoch 2/2: train loss")
