import math

import pytest

from nolabel.ops.schedules import cosine, linear, warmup_constant, warmup_cosine


def test_cosine_boundaries_and_midpoint():
    assert cosine(0, 100, 0.996, 1.0) == pytest.approx(0.996)
    assert cosine(50, 100, 0.996, 1.0) == pytest.approx(0.998)
    assert cosine(100, 100, 0.996, 1.0) == 1.0
    assert cosine(1000, 100, 0.996, 1.0) == 1.0
    assert cosine(-5, 100, 1.0, 0.0) == 1.0


def test_cosine_is_monotone():
    vals = [cosine(s, 50, 0.04, 0.4) for s in range(51)]
    assert all(b >= a for a, b in zip(vals, vals[1:]))


def test_cosine_zero_length():
    assert cosine(0, 0, 1.0, 2.0) == 2.0


def test_linear():
    assert linear(0, 10, 0.04, 0.07) == pytest.approx(0.04)
    assert linear(5, 10, 0.04, 0.07) == pytest.approx(0.055)
    assert linear(10, 10, 0.04, 0.07) == pytest.approx(0.07)
    assert linear(20, 10, 0.04, 0.07) == pytest.approx(0.07)


def test_warmup_cosine():
    base, final = 1e-3, 1e-6
    assert warmup_cosine(0, 100, 10, base, final) == 0.0
    assert warmup_cosine(5, 100, 10, base, final) == pytest.approx(base / 2)
    assert warmup_cosine(10, 100, 10, base, final) == pytest.approx(base)
    mid = warmup_cosine(55, 100, 10, base, final)
    assert mid == pytest.approx(final + 0.5 * (base - final) * (1 + math.cos(math.pi * 45 / 90)))
    assert warmup_cosine(100, 100, 10, base, final) == pytest.approx(final)
    assert warmup_cosine(3, 100, 0, base, final) < base  # no warm-up: starts at base, decays


def test_warmup_longer_than_run_is_clamped():
    assert warmup_cosine(5, 10, 50, 1.0, 0.0) == pytest.approx(0.5)


def test_teacher_temperature_warmup():
    assert warmup_constant(0, 30, 0.04, 0.07) == pytest.approx(0.04)
    assert warmup_constant(30, 30, 0.04, 0.07) == pytest.approx(0.07)
    assert warmup_constant(300, 30, 0.04, 0.07) == pytest.approx(0.07)
    assert warmup_constant(0, 0, 0.04, 0.07) == pytest.approx(0.07)
