"""Linear probe (SGD, cosine) and L-BFGS logistic regression on cached features."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nolabel.evaluate.linear import (LinearClassifier, accuracy, fit_logistic, linear_probe, logistic_regression,
                                     train_linear)


def blobs(n_per_class=40, dim=8, classes=3, spread=0.3, seed=0, offset=5.0):
    """Gaussian blobs around far-apart centres (linearly separable for a small spread)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * 3
    y = torch.arange(classes).repeat_interleave(n_per_class)
    x = centres[y] + spread * torch.randn(len(y), dim, generator=g) + offset  # offset: not centred
    return x, y


@pytest.fixture(scope="module")
def separable():
    train = blobs(seed=0)
    g = torch.Generator().manual_seed(1)
    test_y = torch.randint(0, 3, (30,), generator=g)
    centres = torch.randn(3, 8, generator=torch.Generator().manual_seed(0)) * 3  # same centres as train
    test_x = centres[test_y] + 0.3 * torch.randn(30, 8, generator=g) + 5.0
    return train, (test_x, test_y)


@pytest.mark.parametrize("normalize", ["standardize", "l2", "none"])
def test_separable_data_is_learned_perfectly(separable, normalize):
    (x, y), (tx, ty) = separable
    lr = 1.0 if normalize == "l2" else 0.1  # unit-norm features need a larger step
    model, history = train_linear(x, y, tx, ty, epochs=30, lr=lr, batch_size=32, normalize=normalize)
    assert isinstance(model, LinearClassifier) and isinstance(model.linear, torch.nn.Linear)
    assert model.linear.weight.shape == (3, 8)
    assert accuracy(model, x, y) == (100.0, 100.0)
    assert history["val_top1"][-1] == 100.0 and accuracy(model, tx, ty)[0] == 100.0
    assert len(history["train_loss"]) == len(history["lr"]) == 30 and history["epoch"] == list(range(1, 31))
    assert history["train_loss"][-1] < history["train_loss"][0]


def test_cosine_schedule_and_history(separable):
    (x, y), _ = separable
    _, history = train_linear(x, y, epochs=4, lr=0.2, batch_size=60)  # 2 steps per epoch, 8 in all
    expected = [0.2 * 0.5 * (1 + math.cos(math.pi * step / 8)) for step in (0, 2, 4, 6)]
    assert history["lr"] == pytest.approx(expected)
    assert "val_top1" not in history


def test_standardization_travels_with_the_classifier(separable):
    (x, y), _ = separable
    model, _ = train_linear(x, y, epochs=2, lr=0.1)
    z = model.prepare(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(0, correction=0), torch.ones(8), atol=1e-4, rtol=0)
    torch.testing.assert_close(model(x), model.linear(z))  # the module takes raw features
    constant = torch.cat([x, torch.full((x.shape[0], 1), 7.0)], 1)  # a constant dim must not divide by 0
    model, _ = train_linear(constant, y, epochs=2, lr=0.1)
    assert torch.isfinite(model(constant)).all()


def test_training_is_deterministic_given_a_seed(separable):
    (x, y), _ = separable
    a, ha = train_linear(x, y, epochs=3, lr=0.1, batch_size=16, seed=5)
    b, hb = train_linear(x, y, epochs=3, lr=0.1, batch_size=16, seed=5)
    c, _ = train_linear(x, y, epochs=3, lr=0.1, batch_size=16, seed=6)
    assert torch.equal(a.linear.weight, b.linear.weight) and torch.equal(a.linear.bias, b.linear.bias)
    assert ha == hb
    assert not torch.equal(a.linear.weight, c.linear.weight)


def test_weight_decay_spares_the_bias(separable):
    (x, y), _ = separable
    free, _ = train_linear(x, y, epochs=5, lr=0.1, seed=0)
    decayed, _ = train_linear(x, y, epochs=5, lr=0.1, seed=0, weight_decay=0.5)
    assert decayed.linear.weight.norm() < free.linear.weight.norm()


def test_lr_sweep_returns_one_run_per_lr(separable):
    (x, y), (tx, ty) = separable
    res = linear_probe(x, y, tx, ty, lrs=(0.001, 0.1, 1.0), epochs=5, batch_size=32)
    assert [r["lr"] for r in res["runs"]] == [0.001, 0.1, 1.0]
    assert all(set(r) == {"lr", "top1", "top5", "train_loss"} for r in res["runs"])
    assert res["best"] == max(res["runs"], key=lambda r: r["top1"]) and res["selected_on"] == "test"
    assert res["best"]["top1"] == 100.0 and all(r["top5"] == 100.0 for r in res["runs"])  # C = 3 < 5
    assert (res["n_train"], res["n_test"], res["feature_dim"], res["num_classes"]) == (120, 30, 8, 3)
    with_val = linear_probe(x, y, tx, ty, lrs=(0.001, 0.1), val_x=tx[:10], val_y=ty[:10], epochs=5, batch_size=32)
    assert with_val["selected_on"] == "val" and {"val_top1", "val_top5"} <= set(with_val["runs"][0])
    assert with_val["best"] == max(with_val["runs"], key=lambda r: r["val_top1"])


def test_top_k_ties_go_to_lower_class():
    model = LinearClassifier(2, 7, normalize="none")
    with torch.no_grad():
        model.linear.weight.zero_()
        model.linear.bias.zero_()  # every class ties
    x = torch.zeros(3, 2)
    assert accuracy(model, x, torch.tensor([0, 0, 0])) == (100.0, 100.0)
    assert accuracy(model, x, torch.tensor([1, 4, 5])) == (0.0, pytest.approx(200 / 3))  # 5 is ranked 6th


def test_logistic_matches_sklearn():
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(0)
    x = torch.randn(90, 5, generator=g, dtype=torch.float64) * torch.tensor([1.0, 3.0, 0.5, 2.0, 1.0]) + 2
    y = torch.randint(0, 3, (90,), generator=g)  # noisy labels: not separable, the penalty matters
    y[x[:, 0] > 2.5] = 2
    l2 = 0.01
    model, info = fit_logistic(x, y, l2=l2, dtype=torch.float64)
    z = (x - x.mean(0)) / x.std(0, correction=0)  # the same standardisation, done by hand
    ref = LogisticRegression(C=1.0 / (l2 * len(y)), tol=1e-10, max_iter=10000).fit(z.numpy(), y.numpy())
    probs = F.softmax(model(x), dim=1).detach()
    torch.testing.assert_close(probs, torch.from_numpy(ref.predict_proba(z.numpy())), atol=1e-6, rtol=0)
    torch.testing.assert_close(model.linear.weight.detach(), torch.from_numpy(ref.coef_), atol=1e-5, rtol=0)
    assert info["n_iter"] >= 1 and info["n_evals"] >= info["n_iter"]
    # optimality: the gradient of the objective vanishes at the solution
    w = model.linear.weight.detach().clone().requires_grad_(True)
    b = model.linear.bias.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(F.linear(z, w, b), y) + 0.5 * l2 * w.square().sum()
    loss.backward()
    assert float(w.grad.abs().max()) < 1e-6 and float(b.grad.abs().max()) < 1e-6
    assert info["loss"] == pytest.approx(float(loss.detach()), abs=1e-10)


def test_logistic_closed_form_without_features():
    # zero features: the optimum predicts the empirical class frequencies softmax(b) = (1, 2, 3) / 6
    x = torch.zeros(6, 3)
    y = torch.tensor([0, 1, 1, 2, 2, 2])
    model, _ = fit_logistic(x, y, l2=0.1, normalize="none", dtype=torch.float64)
    torch.testing.assert_close(F.softmax(model.linear.bias.detach(), 0),
                               torch.tensor([1 / 6, 2 / 6, 3 / 6], dtype=torch.float64), atol=1e-6, rtol=0)
    assert float(model.linear.weight.detach().abs().max()) == 0.0


def test_logistic_regression_on_separable_data(separable):
    (x, y), (tx, ty) = separable
    res = logistic_regression(x, y, tx, ty, l2=1e-3)
    assert res["top1"] == 100.0 and res["top5"] == 100.0
    assert res == {**res, "l2": 1e-3, "normalize": "standardize", "n_train": 120, "n_test": 30, "num_classes": 3}
    assert logistic_regression(x, y, tx, ty, l2=1e-3) == {**res, "seconds": pytest.approx(res["seconds"], abs=5)}


@pytest.mark.parametrize("kwargs,match", [
    ({"normalize": "whiten"}, "normalize"),
    ({"train_y": torch.tensor([0, -1] * 60)}, "negative"),
    ({"train_y": torch.zeros(120)}, "integer"),
    ({"train_y": torch.zeros(5, dtype=torch.long)}, "train_y"),
    ({"train_x": torch.zeros(0, 8)}, "train_x"),
    ({"val_x": torch.zeros(4, 7), "val_y": torch.zeros(4, dtype=torch.long)}, "feature dim"),
    ({"val_x": torch.zeros(4, 8)}, "both"),
    ({"epochs": 0}, "epochs"),
    ({"batch_size": 0}, "batch_size"),
    ({"lr": 0.0}, "lr"),
    ({"num_classes": 2}, "num_classes"),
])
def test_train_validation(separable, kwargs, match):
    (x, y), _ = separable
    args = {"train_x": x, "train_y": y, "epochs": 1}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        train_linear(**args)


def test_logistic_and_probe_validation(separable):
    (x, y), (tx, ty) = separable
    with pytest.raises(ValueError, match="test_x"):
        logistic_regression(x, y, tx[:, :4], ty)
    with pytest.raises(ValueError, match="l2"):
        fit_logistic(x, y, l2=-1.0)
    with pytest.raises(ValueError, match="lrs"):
        linear_probe(x, y, tx, ty, lrs=())
    with pytest.raises(ValueError, match="test_y"):
        linear_probe(x, y, tx, ty[:3], lrs=(0.1,), epochs=1)
