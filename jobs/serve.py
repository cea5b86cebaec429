"""Serve a student over HTTP (Ray Serve): POST a question, get the rationale, then the answer.

Local head (`eval "$(cluster/local_head.sh start)"` first, see docs/operations.md):

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- python jobs/serve.py jobs/configs/local/serve.yaml
"""

from _common import main


def serve(cfg):
    from ray_cotd.serve import run_serve

    return run_serve(cfg)


if __name__ == "__main__":
    main("serve", serve)
