"""Annotate questions with teacher rationales (Ray Data): questions in, annotated Parquet corpus out.

Local head (`eval "$(cluster/local_head.sh start)"` first, see docs/operations.md):

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- python jobs/annotate.py jobs/configs/local/annotate.yaml
"""

from _common import main


def annotate(cfg):
    from ray_cotd.teacher.annotate import run_annotate

    return run_annotate(cfg)


if __name__ == "__main__":
    main("annotate", annotate)
