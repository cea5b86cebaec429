"""`ray-cotd cache`: the model cache listed, and merged LoRA copies pruned (all, unused for N days, or
those whose adapter is gone); merged_lora_source marks a reused copy as used. Tiny model, tmp cache."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from ray_cotd.cli import main
from ray_cotd.config import ModelSpec
from ray_cotd.lm.cache import cache_entries, prune_merged
from ray_cotd.lm.model import load_model, merged_lora_source, write_student_meta
from tiny_llama import tiny_llama


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_COTD_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _student(base, out):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(load_model(ModelSpec(source=str(base))), LoraConfig(r=4, target_modules=["q_proj"]))
    model.save_pretrained(str(out))
    write_student_meta(out, {"base": str(base), "gguf_file": None, "peft": "lora", "objective": "cascod"})
    return ModelSpec(source=str(base), adapter=str(out))


@pytest.fixture
def two_copies(tmp_path, cache):
    model, tok = tiny_llama()
    base = tmp_path / "base"
    model.save_pretrained(base)
    tok.save_pretrained(base)
    kept, gone = _student(base, tmp_path / "kept"), _student(base, tmp_path / "gone")
    copies = merged_lora_source(kept, "float32"), merged_lora_source(gone, "float32")
    shutil.rmtree(tmp_path / "gone")  # a student deleted after it was evaluated
    return kept, copies


def test_the_listing_names_each_copy_its_adapter_and_whether_it_is_gone(two_copies, cache, capsys):
    kept, (kept_copy, gone_copy) = two_copies
    entries = {e.path: e for e in cache_entries()}
    assert set(entries) == {kept_copy, gone_copy}
    assert entries[kept_copy].adapter == str(os.path.realpath(kept.adapter)) and not entries[kept_copy].orphaned
    assert entries[gone_copy].orphaned and entries[gone_copy].bytes > 0
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert str(cache) in out and "2 directories" in out and out.count("[adapter gone]") == 1


def test_prune_deletes_orphans_old_copies_or_all_and_a_dry_run_nothing(two_copies, cache, capsys):
    kept, (kept_copy, gone_copy) = two_copies
    assert [e.path for e in prune_merged(orphaned_only=True, dry_run=True)] == [gone_copy] and gone_copy.is_dir()
    assert main(["cache", "--prune", "--orphaned"]) == 0
    assert "deleted 1 merged copies" in capsys.readouterr().out and not gone_copy.exists()

    week_ago = time.time() - 7 * 86400
    os.utime(kept_copy, (week_ago, week_ago))
    assert prune_merged(older_than_days=8) == []  # used 7 days ago: kept
    assert merged_lora_source(kept, "float32") == kept_copy  # reused: now its last use
    assert prune_merged(older_than_days=1) == [] and kept_copy.is_dir()
    assert [e.path for e in prune_merged()] == [kept_copy] and not kept_copy.exists()


def test_cache_flags_that_need_prune_and_bad_days_are_one_line_errors(cache, capsys):
    assert main(["cache", "--orphaned"]) == 2
    assert "go with --prune" in capsys.readouterr().err
    assert main(["cache", "--prune", "--older-than", "-1"]) == 2
    assert "must be >= 0 days" in capsys.readouterr().err
    assert main(["cache"]) == 0 and "no cached models" in capsys.readouterr().out
