"""Run annotate → train → evaluate (then tune and serve when configured) in one job.

Local head (`eval "$(cluster/local_head.sh start)"` first, see docs/operations.md):

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- python jobs/pipeline.py jobs/configs/quickstart.yaml run_dir=/tmp/ray-cotd/quickstart
"""

from _common import main


def pipeline(cfg):
    from ray_cotd.pipeline import run_pipeline

    return run_pipeline(cfg)


if __name__ == "__main__":
    main("pipeline", pipeline)
