"""Load test of the Serve endpoint on loopback: latency percentiles and throughput, batched vs not.

    python bench/serve.py --quick          # < 5 minutes on a 2-core CPU box
    python bench/serve.py                  # longer rationales, more requests per level

Starts a local Ray cluster, serves the real default student with `run_serve`, and drives
POST /v1/reason from 1, 4 and 16 closed-loop clients (each sends its next request when the last one
returns). Then the same replica config is redeployed with max_batch_size=1 - one request at a time -
and driven by 16 clients again. Every request in both modes is the same question mix and limits.

Last line: `batched_over_sequential=<ratio> p99_ms_16=<ms>`: requests/s at 16 clients with dynamic
batching over requests/s at 16 clients one at a time, and the batched p99 latency at 16 clients.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from ray_cotd.config import ServeConfig
from ray_cotd.ray_session import free_port

# Invented word problems of similar length (the rationale limit, not the question, sets the cost).
QUESTIONS = [
    "A farmer has 7 rows of 9 carrots. How many carrots are there in all?",
    "Lena had 45 stickers and gave 18 to her brother. How many stickers does she have left?",
    "A bus carries 38 people and 13 get off at the first stop. How many are still on the bus?",
    "Each box holds 6 pencils. How many pencils are in 12 boxes?",
    "Tim ran 4 km on Monday and 7 km on Tuesday. How far did he run in total?",
    "A pizza is cut into 8 slices and 3 are eaten. How many slices are left?",
    "There are 24 students split evenly into 4 teams. How many students are on each team?",
    "A shop sold 15 apples in the morning and 27 in the afternoon. How many apples were sold?",
]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def drive(url: str, clients: int, per_client: int, limits: dict) -> dict:
    """`clients` closed-loop clients, `per_client` requests each; latency and throughput."""
    latencies: list[float] = []
    tokens: list[int] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        with requests.Session() as session:
            for i in range(per_client):
                question = QUESTIONS[(k * per_client + i) % len(QUESTIONS)]
                start = time.perf_counter()
                r = session.post(f"{url}/v1/reason", json={"question": question, **limits}, timeout=600)
                elapsed = time.perf_counter() - start
                with lock:
                    if r.status_code != 200:
                        failures.append(f"{r.status_code}: {r.text[:200]}")
                        continue
                    usage = r.json()["usage"]
                    latencies.append(elapsed)
                    tokens.append(usage["rationale_tokens"] + usage["answer_tokens"])

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, first: {failures[0]}")
    return {
        "clients": clients,
        "requests": len(latencies),
        "wall_s": round(wall, 2),
        "rps": len(latencies) / wall,
        "gen_tokens_per_s": sum(tokens) / wall,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p95_ms": percentile(latencies, 95) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "mean_tokens": statistics.mean(tokens),
    }


def deploy(cfg: ServeConfig) -> str:
    from ray_cotd.serve import run_serve

    url = run_serve(cfg, blocking=False)
    # Warm-up: the first forward passes allocate; not part of any measurement.
    for q in QUESTIONS[:2]:
        requests.post(f"{url}/v1/reason", json={"question": q}, timeout=600).raise_for_status()
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short rationales and few requests (< 5 min)")
    parser.add_argument("--batch-size", type=int, default=16, help="max_batch_size of the batched run")
    # One thread by default: on a shared 2-core box, 2 torch threads under contention decoded 10x
    # slower than 1 (OpenMP threads spin-wait for a core); raise it on a dedicated machine.
    parser.add_argument("--num-cpus", type=float, default=1.0, help="CPUs (torch threads) of the one replica")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()

    # Short rationales make prefill (which batching does not speed up) a large share of the cost, so
    # --quick keeps 24 tokens rather than fewer; served students write ~64-192.
    rationale_tokens, answer_tokens = (24, 4) if args.quick else (64, 8)
    # requests per client at 1, 4 and 16 clients (batched), and at 16 clients one at a time: its queue
    # stays full until the last request, so one request per client already measures its throughput.
    plan = {1: 2, 4: 2, 16: 2} if args.quick else {1: 12, 4: 8, 16: 8}
    sequential_per_client = 1 if args.quick else 4
    limits = {"max_rationale_tokens": rationale_tokens, "max_answer_tokens": answer_tokens}

    import ray
    from ray import serve

    ray.init(address="local", num_cpus=max(2, int(args.num_cpus)), include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    port = free_port()
    common = dict(port=port, num_cpus=args.num_cpus, max_rationale_tokens=rationale_tokens,
                  max_answer_tokens=answer_tokens, max_ongoing_requests=max(32, args.batch_size),
                  batch_wait_timeout_s=0.05, request_timeout_s=600.0)
    results: dict[str, list[dict]] = {}
    try:
        runs = [("batched", args.batch_size, plan), ("sequential", 1, {16: sequential_per_client})]
        for mode, batch_size, levels in runs:
            cfg = ServeConfig(max_batch_size=batch_size, **common)
            url = deploy(cfg)
            results[mode] = []
            for clients, per_client in levels.items():
                results[mode].append(drive(url, clients, per_client, limits))
                print(f"[{mode}] {clients} clients: {json.dumps(results[mode][-1])}", file=sys.stderr, flush=True)
            # Delete before redeploying: a rolling update would start the new replica first, and
            # the old one holds the CPUs it needs.
            serve.delete(cfg.app_name)
    finally:
        serve.shutdown()
        ray.shutdown()

    print(f"limits: rationale<={rationale_tokens} answer<={answer_tokens} tokens; replica num_cpus={args.num_cpus}; "
          f"batched max_batch_size={args.batch_size}")
    print(f"{'mode':<11}{'clients':>8}{'requests':>9}{'req/s':>8}{'gen tok/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for mode, rows in results.items():
        for r in rows:
            print(f"{mode:<11}{r['clients']:>8}{r['requests']:>9}{r['rps']:>8.2f}{r['gen_tokens_per_s']:>10.1f}"
                  f"{r['p50_ms']:>9.0f}{r['p95_ms']:>9.0f}{r['p99_ms']:>9.0f}")
    batched16 = next(r for r in results["batched"] if r["clients"] == 16)
    ratio = batched16["rps"] / results["sequential"][0]["rps"]
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"limits": limits, "batch_size": args.batch_size, "num_cpus": args.num_cpus, **results}, f, indent=1)
    print(f"batched_over_sequential={ratio:.2f} p99_ms_16={batched16['p99_ms']:.0f}")


if __name__ == "__main__":
    main()
