"""The main job's headline: the trained student against its untrained self on held-out questions.

    headline(report, predictions) -> dict       (summary.json's "headline")
    plot_headline(headline, path)               (headline.png)
    headline_text(headline) -> str              (the report's first line)

Which systems: the evaluate report's first student, and the `untrained` baseline (the same base
model, zero-shot, same prompt). Which questions: every question of the report's IND test sets that
both answered, paired by (test set, position) and checked to be the same question. The numbers:
both accuracies with Wilson 95% CIs (ray_cotd.metrics.accuracy) and the exact two-sided McNemar
p-value over those pairs (ray_cotd.metrics.mcnemar_exact), which counts only the questions one
system got right and the other wrong.

When there is nothing to compare (no `untrained` baseline, no student, no IND set), the headline
says why in `reason` and leaves the baseline's numbers and the p-value None: it never invents a
comparison. Plain Python; no Ray, no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ray_cotd.metrics import accuracy, mcnemar_exact
from ray_cotd.scoring import Prediction

BASELINE = "untrained"  # the baseline the headline compares with (names.BASELINES)
HEADLINE_SPLIT = "IND"


def _rate(flags: list[bool]) -> dict[str, Any] | None:
    return accuracy(flags).to_dict() if flags else None


def _empty(reason: str, *, student: str | None, test_sets: list[str], student_flags: list[bool]) -> dict[str, Any]:
    return {"n": len(student_flags) if student_flags else None,
            "student_correct": sum(student_flags) if student_flags else None, "baseline_correct": None,
            "p_value": None, "student": student, "baseline": None, "test_sets": test_sets,
            "student_accuracy": _rate(student_flags), "baseline_accuracy": None,
            "student_only": None, "baseline_only": None, "reason": reason}


def headline(report: dict[str, Any], predictions: Sequence[Prediction]) -> dict[str, Any]:
    """The comparison an evaluate `report` (report.json's content) and its `predictions` support.

    Keys: n, student_correct, baseline_correct, p_value, student, baseline, test_sets,
    student_accuracy / baseline_accuracy ({n, k, rate, ci_low, ci_high}), student_only /
    baseline_only (the discordant questions), reason (None, or why there is no comparison).
    Raises ValueError when the two systems' predictions of a paired position are different questions.
    """
    students = [s["name"] for s in report["systems"] if s["kind"] == "student"]
    test_sets = [t["name"] for t in report["test_sets"] if t["split"] == HEADLINE_SPLIT]
    student = students[0] if students else None
    if student is None:
        return _empty("the evaluate stage scored no student", student=None, test_sets=test_sets, student_flags=[])
    by_key = {(p.system, p.test_set, p.position): p for p in predictions}
    student_rows = [p for p in predictions if p.system == student and p.test_set in test_sets]
    if not test_sets:
        return _empty(f"the evaluate stage has no {HEADLINE_SPLIT} test set", student=student, test_sets=[],
                      student_flags=[])
    baselines = [s["name"] for s in report["systems"] if s["kind"] == "baseline"]
    if BASELINE not in baselines:
        return _empty(f"the evaluate stage ran no {BASELINE!r} baseline (evaluate.baselines: {baselines}), "
                      "so the trained student has nothing to be compared with",
                      student=student, test_sets=test_sets, student_flags=[p.correct for p in student_rows])
    pairs = []
    for s in student_rows:
        b = by_key.get((BASELINE, s.test_set, s.position))
        if b is None:
            continue
        if b.id != s.id:
            raise ValueError(f"{s.test_set} position {s.position}: the student answered question {s.id} but the "
                             f"baseline {b.id}; paired results need the same questions")
        pairs.append((s.correct, b.correct))
    if not pairs:
        return _empty(f"the student and the {BASELINE!r} baseline share no answered {HEADLINE_SPLIT} question",
                      student=student, test_sets=test_sets, student_flags=[p.correct for p in student_rows])
    student_flags, baseline_flags = [s for s, _ in pairs], [b for _, b in pairs]
    test = mcnemar_exact(student_flags, baseline_flags)
    return {"n": len(pairs), "student_correct": sum(student_flags), "baseline_correct": sum(baseline_flags),
            "p_value": test["p"], "student": student, "baseline": BASELINE, "test_sets": test_sets,
            "student_accuracy": _rate(student_flags), "baseline_accuracy": _rate(baseline_flags),
            "student_only": test["a_only"], "baseline_only": test["b_only"], "reason": None}


def format_p(p: float) -> str:
    """'p = 0.125', 'p = 0.012', 'p = 1.9e-06': the exact value, readable at every scale."""
    if p < 1e-3:
        return f"p = {p:.1e}"
    return f"p = {p:.2g}" if p < 0.01 else "p = " + f"{p:.3f}".rstrip("0").rstrip(".")


def format_rate(rate: dict[str, Any]) -> str:
    """'68.3% [55.7, 78.8] (41/60)': accuracy, Wilson 95% CI, correct/n."""
    return (f"{100 * rate['rate']:.1f}% [{100 * rate['ci_low']:.1f}, {100 * rate['ci_high']:.1f}] "
            f"({rate['k']}/{rate['n']})")


def headline_text(h: dict[str, Any]) -> str:
    """One sentence: both accuracies with CIs, the p-value and n, or why there is no comparison."""
    sets = ", ".join(h["test_sets"]) or "no test set"
    if h["reason"] is not None:
        measured = f"; the student alone: {format_rate(h['student_accuracy'])}" if h["student_accuracy"] else ""
        return f"No headline comparison: {h['reason']}{measured}."
    verdict = ("the trained student answers more questions correctly" if h["student_only"] > h["baseline_only"]
               else "the untrained baseline answers more questions correctly" if h["baseline_only"] > h["student_only"]
               else "no difference")
    return (f"Trained student {format_rate(h['student_accuracy'])} vs untrained {format_rate(h['baseline_accuracy'])} "
            f"on n = {h['n']} held-out questions ({sets}); exact McNemar {format_p(h['p_value'])} "
            f"({h['student_only']} right only by the student, {h['baseline_only']} only by the baseline): {verdict}.")


def plot_headline(h: dict[str, Any], path: str | Path) -> None:
    """Two bars (untrained, trained) with Wilson 95% CIs; the title carries n and the p-value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ray_cotd.metrics import error_bars

    rates = [("untrained baseline", h["baseline_accuracy"]),
             (f"trained student\n({h['student']})", h["student_accuracy"])]
    shown = [(label, r) for label, r in rates if r is not None]
    fig, ax = plt.subplots(figsize=(4.5, 4))
    if shown:
        xs = list(range(len(shown)))
        ys = [r["rate"] for _, r in shown]
        colors = ["#999999" if label.startswith("untrained") else "#1f77b4" for label, _ in shown]
        bars = ax.bar(xs, ys, 0.6, yerr=error_bars([r for _, r in shown]), capsize=4, color=colors)
        ax.bar_label(bars, labels=[f"{r['rate']:.0%} ({r['k']}/{r['n']})" for _, r in shown], fontsize=8, padding=2)
        ax.set_xticks(xs, [label for label, _ in shown], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (95% Wilson CI)")
    sets = ", ".join(h["test_sets"])
    if h["reason"] is None:
        ax.set_title(f"{sets}: n = {h['n']}, exact McNemar {format_p(h['p_value'])}", fontsize=9)
    else:
        ax.set_title(f"{sets}: no baseline to compare with", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


__all__ = ["BASELINE", "format_p", "format_rate", "headline", "headline_text", "plot_headline"]
