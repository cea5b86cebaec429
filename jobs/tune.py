"""Search CasCoD α, PRADA λ, granularity level and learning rate (Ray Tune: Optuna + ASHA).

Local head (`eval "$(cluster/local_head.sh start)"` first, see docs/operations.md):

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- python jobs/tune.py jobs/configs/local/tune.yaml
"""

from _common import main


def tune(cfg):
    from ray_cotd.tune import run_tune

    return run_tune(cfg)


if __name__ == "__main__":
    main("tune", tune)
