"""Run annotate → train → evaluate (then tune and serve when configured) in one job.

Local head (`eval "$(cluster/local_head.sh start)"` first, see docs/operations.md):

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- python jobs/pipeline.py jobs/configs/quickstart.yaml run_dir=/tmp/ray-cotd/quickstart

The job's log shows each stage, one progress bar per stage, the headline and a short table; the
frameworks' logs go to RUN_DIR/framework.log (append `verbose=true` to see them in the job's log).
"""

from _common import main


def pipeline(cfg):
    from ray_cotd.pipeline import run_pipeline

    run_pipeline(cfg)  # prints its own table; the whole summary is in run_dir/summary.json


if __name__ == "__main__":
    main("pipeline", pipeline)
