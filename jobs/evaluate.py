"""Score students on IND/OOD test sets (Ray Data): accuracy per set, report.json and plots.

Local head (`eval "$(cluster/local_head.sh start)"` first, see docs/operations.md):

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- python jobs/evaluate.py jobs/configs/local/evaluate.yaml
"""

from _common import main


def evaluate(cfg):
    from ray_cotd.evaluate import run_evaluate

    return run_evaluate(cfg)


if __name__ == "__main__":
    main("evaluate", evaluate)
