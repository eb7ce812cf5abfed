import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tinydiff.data import load_mnist
from tinydiff.errors import TinyDiffError
from tinydiff.evaluate import (
    DigitClassifier,
    class_histogram,
    confidence,
    features,
    frechet_distance,
    frechet_distance_from_stats,
    gaussian_stats,
    load_classifier,
    mnist_fd,
    predict,
    prompt_accuracy,
    real_fd_floor,
    shipped_weights_path,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mnist_test(data_dir):
    return load_mnist(data_dir, split="test")


@pytest.fixture(scope="module")
def floor_1000(data_dir) -> float:
    return real_fd_floor(1000, data_dir=data_dir)


# -- the shipped classifier ----------------------------------------------------------


def test_shipped_weights_are_small_and_load_without_network(monkeypatch) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError("loading the classifier must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    path = shipped_weights_path()
    assert path.is_file() and path.stat().st_size < 2 * 1024 * 1024
    model = load_classifier()
    assert isinstance(model, DigitClassifier) and not model.training
    assert load_classifier() is model  # cached per process
    assert all(not p.requires_grad for p in model.parameters())


def test_shipped_classifier_reaches_99_percent_on_mnist_test(mnist_test) -> None:
    images, labels = mnist_test
    predicted = predict(images)
    assert predicted.dtype == torch.int64 and predicted.shape == (10_000,)
    accuracy = (predicted == labels).double().mean().item()
    assert accuracy >= 0.99, accuracy


def test_features_are_float64_penultimate_activations(mnist_test) -> None:
    images = mnist_test[0][:64]
    feats = features(images, batch_size=10)  # several batches, a short last one
    assert feats.dtype == torch.float64 and feats.shape == (64, 128)
    with torch.no_grad():
        direct = load_classifier().features(images.unsqueeze(1).float() / 127.5 - 1)
    torch.testing.assert_close(feats, direct.double(), rtol=1e-5, atol=1e-5)


def test_images_must_be_uint8_28x28() -> None:
    with pytest.raises(TinyDiffError, match="uint8 images"):
        predict(torch.rand(4, 28, 28))
    with pytest.raises(TinyDiffError, match="uint8 images"):
        predict(torch.zeros(4, 1, 28, 28, dtype=torch.uint8))


# -- loading is safe and checked ------------------------------------------------------


def _save(path: Path, tensors: dict) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def test_wrong_shape_tensor_is_named(tmp_path) -> None:
    tensors = DigitClassifier().state_dict()
    tensors["fc.weight"] = torch.zeros(128, 100)
    with pytest.raises(TinyDiffError, match=r"'fc\.weight'.*\(128, 100\)"):
        load_classifier(_save(tmp_path / "bad.safetensors", tensors))


def test_missing_and_unexpected_tensors_are_named(tmp_path) -> None:
    tensors = DigitClassifier().state_dict()
    del tensors["out.bias"]
    with pytest.raises(TinyDiffError, match=r"lacks tensor 'out\.bias'"):
        load_classifier(_save(tmp_path / "missing.safetensors", tensors))
    tensors = DigitClassifier().state_dict() | {"extra": torch.zeros(1)}
    with pytest.raises(TinyDiffError, match="unexpected tensor 'extra'"):
        load_classifier(_save(tmp_path / "extra.safetensors", tensors))


def test_corrupted_or_missing_file_is_a_clear_error(tmp_path) -> None:
    good = _save(tmp_path / "good.safetensors", DigitClassifier().state_dict())
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(TinyDiffError, match="truncated or corrupted"):
        load_classifier(truncated)
    with pytest.raises(TinyDiffError, match="missing"):
        load_classifier(tmp_path / "nowhere.safetensors")


def test_fp16_weights_load_as_fp32(tmp_path) -> None:
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in load_classifier().state_dict().items()}
    model = load_classifier(_save(tmp_path / "half.safetensors", half))
    assert next(model.parameters()).dtype == torch.float32


# -- Fréchet distance ------------------------------------------------------------------


def _exact_standard_normal(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """Samples whose sample mean is exactly 0 and unbiased sample covariance exactly I."""
    z = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    z = z - z.mean(0)
    chol = torch.linalg.cholesky(z.T @ z / (n - 1))
    return torch.linalg.solve_triangular(chol, z.T, upper=False).T


def test_frechet_distance_matches_closed_form_for_isotropic_gaussians() -> None:
    d = 5
    z = _exact_standard_normal(500, d)
    m = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0], dtype=torch.float64)
    expected = m.square().sum().item() + d * (1 + 4 - 2 * 2)  # N(0, I) vs N(m, 4I)
    assert frechet_distance(z, m + 2 * z) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(m + 2 * z, z) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_in_one_dimension() -> None:
    # 1-D: (mu_a - mu_b)^2 + (s_a - s_b)^2
    fd = frechet_distance_from_stats(torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([-2.0]), torch.tensor([[9.0]]))
    assert fd == pytest.approx(9.0 + 1.0, rel=1e-12)


def test_frechet_distance_with_non_commuting_covariances() -> None:
    # 2x2: Tr(sqrt(M)) = sqrt(Tr M + 2 sqrt(det M)) for M = S_a S_b (eigenvalues > 0)
    s_a = torch.tensor([[2.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
    s_b = torch.tensor([[1.0, -0.3], [-0.3, 3.0]], dtype=torch.float64)
    mu = torch.zeros(2, dtype=torch.float64)
    prod = s_a @ s_b
    tr_sqrt = math.sqrt(torch.trace(prod).item() + 2 * math.sqrt(torch.det(prod).item()))
    expected = torch.trace(s_a).item() + torch.trace(s_b).item() - 2 * tr_sqrt
    assert frechet_distance_from_stats(mu, s_a, mu, s_b) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_of_identical_sets_is_zero_even_when_singular() -> None:
    x = torch.randn(20, 50, generator=torch.Generator().manual_seed(1))  # N < D: singular covariance
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(x, x + 1) == pytest.approx(50.0, rel=1e-6)


def test_frechet_distance_rejects_bad_shapes() -> None:
    with pytest.raises(TinyDiffError, match="N >= 2"):
        frechet_distance(torch.zeros(1, 3), torch.zeros(5, 3))
    with pytest.raises(TinyDiffError, match="dimension 3 and 4"):
        frechet_distance(torch.randn(5, 3), torch.randn(5, 4))


# -- MNIST-FD --------------------------------------------------------------------------


def test_mnist_fd_of_the_test_set_against_itself_is_zero(mnist_test, data_dir) -> None:
    images = mnist_test[0]
    _, sigma = gaussian_stats(features(images))
    assert mnist_fd(images, data_dir=data_dir) < 1e-3 * torch.trace(sigma).item()


def test_mnist_fd_of_noise_is_far_above_the_floor(data_dir, floor_1000) -> None:
    noise = torch.randint(0, 256, (1000, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert mnist_fd(noise, data_dir=data_dir) > 100 * floor_1000


def test_real_fd_floor_is_small_positive_and_shrinks_with_n(mnist_test, data_dir, floor_1000) -> None:
    _, sigma = gaussian_stats(features(mnist_test[0]))
    assert 0 < floor_1000 < 0.05 * torch.trace(sigma).item()
    assert real_fd_floor(1000, data_dir=data_dir, seed=0) == floor_1000  # seeded
    assert real_fd_floor(200, data_dir=data_dir) > floor_1000  # FD is biased upwards at small N
    with pytest.raises(TinyDiffError, match="n must be between"):
        real_fd_floor(1, data_dir=data_dir)


def test_mnist_fd_reference_must_be_a_split(mnist_test, data_dir) -> None:
    with pytest.raises(TinyDiffError, match="reference"):
        mnist_fd(mnist_test[0][:10], data_dir=data_dir, reference="val")  # type: ignore[arg-type]


# -- digit accuracy --------------------------------------------------------------------


class BrightnessReader(DigitClassifier):
    """A stand-in classifier that reads an image filled with value 10*k as digit k."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        digit = ((x.mean((1, 2, 3)) + 1) * 127.5 / 10).round().long()
        return torch.nn.functional.one_hot(digit, 10).float()


def _filled(*digits: int) -> torch.Tensor:
    return torch.stack([torch.full((28, 28), 10 * d, dtype=torch.uint8) for d in digits])


def test_prompt_accuracy_counts_hits_per_asked_digit() -> None:
    reader = BrightnessReader().eval()
    images = _filled(3, 3, 3, 7, 7, 0)  # what the images show
    asked = [3, 3, 5, 7, 1, 0]  # what was asked for
    result = prompt_accuracy(images, asked, classifier=reader)
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["per_digit"] == {0: 1.0, 1: 0.0, 3: 1.0, 5: 0.0, 7: 1.0}
    assert result["counts"] == {0: 1, 1: 1, 3: 2, 5: 1, 7: 1} and result["n"] == 6
    assert prompt_accuracy(images, torch.tensor([3, 3, 3, 3, 3, 3]), classifier=reader)["per_digit"] == {3: 0.5}


def test_prompt_accuracy_checks_its_inputs() -> None:
    with pytest.raises(TinyDiffError, match="one digit per image"):
        prompt_accuracy(_filled(1, 2), [1])
    with pytest.raises(TinyDiffError, match="between 0 and 9"):
        prompt_accuracy(_filled(1, 2), [1, 10])


def test_class_histogram_counts_each_digit() -> None:
    reader = BrightnessReader().eval()
    assert class_histogram(_filled(9, 9, 2, 0, 9), classifier=reader) == [1, 0, 1, 0, 0, 0, 0, 0, 0, 3]


def test_confidence_is_the_mean_top_class_probability(mnist_test) -> None:
    images, _ = mnist_test
    real = confidence(images[:500])
    assert 0.95 < real <= 1.0, "the classifier reads real digits without doubt"
    reader = BrightnessReader().eval()  # one-hot logits: the top class has probability e / (e + 9)
    assert confidence(_filled(1, 5, 9), classifier=reader) == pytest.approx(math.e / (math.e + 9))


def test_loading_the_classifier_leaves_the_global_rng_alone(tmp_path) -> None:
    """A training run checkpoints the global RNG; its --eval-every evaluations must not move it, or resume is not exact."""
    import shutil

    path = tmp_path / "classifier.safetensors"
    shutil.copy(shipped_weights_path(), path)  # a path is loaded anew each time (the shipped one is cached)
    before = torch.get_rng_state()
    load_classifier(path)
    assert torch.equal(before, torch.get_rng_state())


def test_prompt_accuracy_on_real_digits(mnist_test) -> None:
    images, labels = mnist_test
    result = prompt_accuracy(images[:500], labels[:500])
    assert result["accuracy"] >= 0.97 and set(result["per_digit"]) == set(range(10))
    assert sum(class_histogram(images[:500])) == 500


# -- the training script ---------------------------------------------------------------


def _train_script(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "train_classifier.py"), "--data-dir", str(data_dir), *args],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip


def test_training_script_smoke_run_writes_loadable_weights(tmp_path, data_dir) -> None:
    out = tmp_path / "smoke" / "classifier.safetensors"
    proc = _train_script("--smoke", "--out", str(out), data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout and str(out) in proc.stdout
    model = load_classifier(out)
    assert predict(_filled(1, 2, 3), classifier=model).shape == (3,)
    assert sorted(p.name for p in out.parent.iterdir()) == ["classifier.safetensors"]  # no temporaries left
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_training_script_refuses_to_write_below_the_accuracy_bar(tmp_path, data_dir) -> None:
    out = tmp_path / "classifier.safetensors"
    proc = _train_script("--limit", "64", "--batch-size", "32", "--epochs", "1", "--out", str(out), data_dir=data_dir)
    assert proc.returncode == 1
    assert "below 0.99" in proc.stderr and not out.exists()
