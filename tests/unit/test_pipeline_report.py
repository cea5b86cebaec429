"""What the pipeline ends with, from hand-built stage summaries: the short table and report.md."""

from __future__ import annotations

from pathlib import Path

from ray_cotd.pipeline import contamination_line, corpus_line, format_table, report_markdown, summary_rows

HEADLINE = {"n": 60, "student_correct": 30, "baseline_correct": 10, "p_value": 2 / 2**20, "student": "student",
            "baseline": "untrained", "test_sets": ["word-problems"],
            "student_accuracy": {"n": 60, "k": 30, "rate": 0.5, "ci_low": 0.377, "ci_high": 0.623},
            "baseline_accuracy": {"n": 60, "k": 10, "rate": 1 / 6, "ci_low": 0.093, "ci_high": 0.281},
            "student_only": 20, "baseline_only": 0, "reason": None}


def _summary(**extra) -> dict:
    return {
        "run_dir": "runs/quickstart", "headline": HEADLINE,
        "annotate": {"rows_done": 14, "kept": 13, "dropped_by_reason": {"no_marker": 1},
                     "accuracy_of_generated": 0.142857},
        "train": {"steps": 4, "first_loss": 0.68, "final_loss": 0.2506,
                  "data": {"train_rows": 11, "contamination": {
                      "ngram": 13, "train_rows": 11, "flagged_rows": 0, "decontaminate": "warn",
                      "sets": [{"name": "word-problems", "test_questions": 60, "exact": 0, "ngram": 0,
                                "examples": []}]}}},
        **extra,
    }


def test_the_table_names_every_stage_and_where_things_are():
    serve = {"url": "http://127.0.0.1:8000", "question": "Mia has 7 red pencils and 5 blue pencils. How many?",
             "response": {"answer": "12"}}
    rows = summary_rows(_summary(serve=serve, wall_s=523.4,
                                 stage_s={"annotate": 201.2, "train": 150.0, "evaluate": 140.5, "serve": 30.1}),
                        Path("runs/quickstart/framework.log"))
    table = dict(rows)
    assert table["corpus"] == "kept 13 of 14 teacher samples, rejected 1 (no_marker 1); the teacher was right on 14%"
    assert table["contamination"] == "word-problems: 0 exact, 0 by 13-gram of 11 training rows (nothing to do)"
    assert table["train"] == "4 steps on 11 rows, loss 0.680 -> 0.251"
    assert table["accuracy"] == ("trained 50.0% [37.7, 62.3] (30/60) vs untrained 16.7% [9.3, 28.1] (10/60); "
                                 "exact McNemar p = 1.9e-06, n = 60")
    assert table["served"].endswith("-> '12' (http://127.0.0.1:8000/v1/reason)")
    assert table["time"] == "523 s: annotate 201 s, train 150 s, evaluate 140 s, serve 30 s"
    assert table["logs"] == "runs/quickstart/framework.log (framework logs)"
    text = format_table(rows)
    assert text.splitlines()[0].startswith("corpus         kept 13")
    assert len(text.splitlines()) == 8


def test_no_contamination_check_and_verbose_runs_say_so():
    summary = _summary()
    del summary["train"]["data"]["contamination"]
    rows = dict(summary_rows(summary, None))
    assert rows["contamination"].startswith("not checked")
    assert rows["logs"] == "on the terminal (verbose)" and "served" not in rows


def test_flagged_rows_name_the_action():
    train = _summary()["train"]
    train["data"]["contamination"]["flagged_rows"] = 2
    train["data"]["contamination"]["decontaminate"] = "drop"
    assert contamination_line(train).endswith("(dropped)")
    assert corpus_line({"rows_done": 5, "kept": 5, "dropped_by_reason": {}, "accuracy_of_generated": None}) == \
        "kept 5 of 5 teacher samples, rejected 0"


def test_report_leads_with_the_headline_and_its_plot():
    summary = _summary()
    text = report_markdown(summary, summary_rows(summary, None))
    lines = text.splitlines()
    assert lines[0] == "# ray-cotd pipeline: runs/quickstart"
    assert lines[2].startswith("Trained student 50.0% [37.7, 62.3] (30/60) vs untrained 16.7%")
    assert "exact McNemar p = 1.9e-06" in lines[2] and "n = 60" in lines[2]
    assert lines[4] == "![trained vs untrained](headline.png)"
    assert "| train | 4 steps on 11 rows, loss 0.680 -> 0.251 |" in lines
