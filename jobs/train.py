"""Train a student on an annotated corpus (Ray Train): CasCoD, PRADA or a baseline objective.

Local head (`eval "$(cluster/local_head.sh start)"` first, see docs/operations.md):

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- python jobs/train.py jobs/configs/local/train.yaml
"""

from _common import main


def train(cfg):
    from ray_cotd.student.train import run_train

    return run_train(cfg)


if __name__ == "__main__":
    main("train", train)
