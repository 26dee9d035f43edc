"""One ranking of scores (issue 20, item 4): ``Ranking(mode)`` says which score is better
wherever hyperpop compares scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hyperpop.ranking import Ranking

NAN = math.nan


@pytest.mark.parametrize("mode", ["max", "min"])
def test_a_number_beats_nothing_and_nan_and_the_better_side_wins(mode):
    r = Ranking(mode)
    good, bad = (2.0, 1.0) if mode == "max" else (1.0, 2.0)
    assert r.better(good, bad) and not r.better(bad, good) and not r.better(good, good)
    assert r.better(bad, None) and r.better(bad, NAN)
    assert not r.better(None, bad) and not r.better(NAN, bad) and not r.better(NAN, None)
    assert r.at_least(good, good) and r.at_least(good, bad) and not r.at_least(bad, good)
    assert r.at_least(NAN, None) and not r.at_least(NAN, bad)
    assert r.oriented(good) > r.oriented(bad) > r.oriented(NAN) == r.oriented(None) == -math.inf
    assert list(r.oriented_array(np.array([good, NAN, bad]))) == [
        r.oriented(good),
        -math.inf,
        r.oriented(bad),
    ]
    assert r.sign * good > r.sign * bad and r.better(bad, r.worst)
    assert r.better(r.toward_better(bad), bad) and r.better(bad, r.toward_worse(bad))
    assert r.reached(good, bad) and r.reached(bad, bad) and not r.reached(NAN, bad)


@pytest.mark.parametrize("mode", ["max", "min"])
def test_best_first_order_and_best_of_put_nan_and_none_last(mode):
    r = Ranking(mode)
    scores = {"a": 1.0, "b": NAN, "c": 3.0, "d": None, "e": 3.0}
    order = sorted(scores, key=lambda k: (*r.key(scores[k]), k))
    top = ["c", "e", "a"] if mode == "max" else ["a", "c", "e"]
    assert order == [*top, "b", "d"]
    assert r.best_of(scores, scores.get) == top[0]  # the first among equals
    assert r.best_of(["b", "d"], scores.get) == "b"  # NaN only when nothing else scored
    assert r.best_of(["d"], scores.get) is None


def test_a_mode_other_than_max_or_min_is_refused_in_one_line():
    with pytest.raises(ValueError, match="mode must be 'max' or 'min', got 'maximise'"):
        Ranking("maximise")
    assert Ranking.of("min") is Ranking.of("min") and Ranking.of("min") == Ranking("min")
