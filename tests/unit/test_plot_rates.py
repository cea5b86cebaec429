"""evaluate.plot_rates on reports whose Wilson bounds sit a rounding error past the rate."""

from __future__ import annotations

from ray_cotd.evaluate import plot_rates
from ray_cotd.metrics import wilson_interval


def test_zero_and_full_scores_plot(tmp_path):
    # 0/100 and 100/100: the Wilson bound can land 1e-17 past the rate, which matplotlib refuses
    results = []
    for system, k in (("a", 0), ("b", 100), ("c", 37)):
        low, high = wilson_interval(k, 100)
        results.append({"system": system, "test_set": "t", "split": "IND",
                        "accuracy": {"n": 100, "k": k, "rate": k / 100, "ci_low": low + (1e-17 if k == 0 else 0.0),
                                     "ci_high": high - (1e-17 if k == 100 else 0.0)}})
    report = {"systems": [{"name": s} for s in "abc"], "test_sets": [{"name": "t", "split": "IND", "n": 100}], "results": results}
    plot_rates(report, "accuracy", tmp_path / "accuracy.png", "accuracy")
    assert (tmp_path / "accuracy.png").stat().st_size > 1000
