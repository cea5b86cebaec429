"""Load test of the Serve endpoint on loopback: latency percentiles and throughput, batched vs not.

    python bench/serve.py --quick          # < 5 minutes on a 2-core CPU box
    python bench/serve.py                  # longer rationales, more requests per level
    python bench/serve.py --load           # 16 clients for 3 minutes: 60% reason, 30% chat, 10% stream
    python bench/serve.py --load --duration 10 --clients 4     # a smoke run of the load mode

Starts a local Ray cluster, serves the real default student with `run_serve`, and drives
POST /v1/reason from 1, 4 and 16 closed-loop clients (each sends its next request when the last one
returns). Then the same replica config is redeployed with max_batch_size=1 - one request at a time -
and driven by 16 clients again. Every request in both modes is the same question mix and limits.

Then the vLLM backend (`backend: vllm`, continuous batching instead of the batcher) is deployed
with the same limits and driven by the same 16 clients.

Last line: `batched_over_sequential=<ratio> p99_ms_16=<ms> vllm_over_hf=<ratio> vllm_p99_ms_16=<ms>`:
requests/s at 16 clients with dynamic batching over requests/s at 16 clients one at a time, the
batched p99 latency at 16 clients, requests/s of the vLLM backend over the batched HF backend at 16
clients, and the vLLM backend's p99 there.

`--load` (issue 23) deploys one batched replica and measures two things:
1. The short request under streams: 7 long streams (sampled at temperature 2, so each runs to the
   rationale bound) start, and once they decode, one 8-token /v1/reason is timed; the streams are
   then closed (their clients leave).
2. Mixed load: `--clients` closed-loop clients for `--duration` seconds, each request drawn at
   random (seeded) as 60% /v1/reason, 30% chat and 10% streamed chat. An error is any status but
   200, or a stream without `[DONE]` or with an error event.
Last line: `requests=N errors=E p50_ms=.. p99_ms=.. reason_p50_ms=.. ... stream_p99_ms=..
short_under_7_streams_ms=.. streams_running_at_short=..` (latency of a stream: until `[DONE]`).
"""

from __future__ import annotations

import argparse
import json
import random
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


# --load: the request mix (issue 23) and the short request timed under streams.
MIX = {"reason": 0.6, "chat": 0.3, "stream": 0.1}
SHORT_UNDER_STREAMS = 7
SHORT_TOKENS = 8


def chat_body(cfg: ServeConfig, question: str, stream: bool, **extra) -> dict:
    return {"model": cfg.model_name, "stream": stream, "messages": [{"role": "user", "content": question}], **extra}


def read_stream(response: requests.Response, first_content: threading.Event | None = None,
                leave: threading.Event | None = None) -> bool:
    """Read an SSE chat stream; True when it ended with [DONE] and no error event. `first_content`
    is set at the first rationale piece; a set `leave` closes the stream (the client leaves)."""
    ok = True
    for line in response.iter_lines():
        if leave is not None and leave.is_set():
            return False
        if line == b"data: [DONE]":
            return ok
        if line.startswith(b'data: {"error"'):
            ok = False
        elif first_content is not None and b'"content": "' in line and b'"content": ""' not in line:
            first_content.set()
    return False


def short_under_streams(url: str, cfg: ServeConfig) -> dict:
    """Latency of an 8-token /v1/reason while 7 long streams decode (issue 23: 43.7 s before)."""
    started = [threading.Event() for _ in range(SHORT_UNDER_STREAMS)]
    finished = [threading.Event() for _ in range(SHORT_UNDER_STREAMS)]
    leave = threading.Event()

    def stream(i: int) -> None:
        body = chat_body(cfg, QUESTIONS[i % len(QUESTIONS)], True, max_tokens=cfg.max_rationale_tokens,
                         temperature=2.0, seed=i)
        with requests.post(f"{url}/v1/chat/completions", json=body, stream=True, timeout=600) as r:
            if read_stream(r, started[i], leave):
                finished[i].set()

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(SHORT_UNDER_STREAMS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 300
    while sum(e.is_set() for e in started) < min(SHORT_UNDER_STREAMS, cfg.max_concurrent_streams):
        if time.monotonic() > deadline:
            raise RuntimeError("the streams did not start decoding within 300 s")
        time.sleep(0.05)
    start = time.perf_counter()
    r = requests.post(f"{url}/v1/reason", json={"question": QUESTIONS[3], "max_rationale_tokens": SHORT_TOKENS,
                                                "max_answer_tokens": 4}, timeout=600)
    elapsed = time.perf_counter() - start
    running = sum(not e.is_set() for e in finished)
    leave.set()
    for t in threads:
        t.join()
    r.raise_for_status()
    return {"short_ms": elapsed * 1000, "streams_running": running,
            "streams_decoding": sum(e.is_set() for e in started)}


def mixed_load(url: str, cfg: ServeConfig, clients: int, duration_s: float, limits: dict) -> dict:
    """`clients` closed-loop clients for `duration_s`, each request drawn from MIX (seeded per client)."""
    latencies: dict[str, list[float]] = {kind: [] for kind in MIX}
    errors: dict[str, int] = {}
    lock = threading.Lock()
    stop_at = time.monotonic() + duration_s
    kinds, weights = list(MIX), list(MIX.values())

    def client(k: int) -> None:
        rng = random.Random(k)
        with requests.Session() as session:
            i = 0
            while time.monotonic() < stop_at:
                kind = rng.choices(kinds, weights)[0]
                question = QUESTIONS[(k + i) % len(QUESTIONS)]
                i += 1
                start = time.perf_counter()
                try:
                    if kind == "reason":
                        r = session.post(f"{url}/v1/reason", json={"question": question, **limits}, timeout=600)
                        ok, status = r.status_code == 200, str(r.status_code)
                    else:
                        body = chat_body(cfg, question, kind == "stream", max_tokens=limits["max_rationale_tokens"])
                        with session.post(f"{url}/v1/chat/completions", json=body, stream=kind == "stream",
                                          timeout=600) as r:
                            ok = r.status_code == 200 and (kind == "chat" or read_stream(r))
                            status = str(r.status_code) if r.status_code != 200 else "stream_error"
                except requests.RequestException as err:
                    ok, status = False, type(err).__name__
                elapsed = time.perf_counter() - start
                with lock:
                    if ok:
                        latencies[kind].append(elapsed)
                    else:
                        errors[f"{kind}:{status}"] = errors.get(f"{kind}:{status}", 0) + 1

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - start
    every = [x for values in latencies.values() for x in values]
    out: dict = {"clients": clients, "wall_s": round(wall, 1), "requests": len(every) + sum(errors.values()),
                 "errors": sum(errors.values()), "error_kinds": errors, "rps": len(every) / wall}
    for name, values in [("all", every), *latencies.items()]:
        out[name] = {"n": len(values), "p50_ms": percentile(values, 50) * 1000 if values else float("nan"),
                     "p99_ms": percentile(values, 99) * 1000 if values else float("nan")}
    return out


def run_load(args: argparse.Namespace, rationale_tokens: int, answer_tokens: int) -> None:
    """--load: the short request under streams, then the mixed load (see the module doc)."""
    import ray
    from ray import serve

    ray.init(address="local", num_cpus=max(2, int(args.num_cpus)), include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    # The bound is the streams' length; reason and chat ask for `rationale_tokens` below it.
    cfg = ServeConfig(port=free_port(), num_cpus=args.num_cpus, max_batch_size=args.batch_size,
                      max_ongoing_requests=max(32, args.batch_size, args.clients), batch_wait_timeout_s=0.05,
                      max_rationale_tokens=max(4 * rationale_tokens, 96), max_answer_tokens=answer_tokens,
                      request_timeout_s=600.0)
    limits = {"max_rationale_tokens": rationale_tokens, "max_answer_tokens": answer_tokens}
    try:
        url = deploy(cfg)
        probe = short_under_streams(url, cfg)
        print(f"[load] short request under streams: {json.dumps(probe)}", file=sys.stderr, flush=True)
        load = mixed_load(url, cfg, args.clients, args.duration, limits)
        print(f"[load] mixed: {json.dumps(load)}", file=sys.stderr, flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()

    print(f"limits: reason/chat rationale<={rationale_tokens} answer<={answer_tokens} tokens, streams "
          f"rationale<={cfg.max_rationale_tokens}; replica num_cpus={args.num_cpus}, max_batch_size={args.batch_size}, "
          f"max_concurrent_streams={cfg.max_concurrent_streams}; {args.clients} clients for {args.duration:.0f} s")
    print(f"{'kind':<8}{'ok':>6}{'p50 ms':>9}{'p99 ms':>9}")
    for kind in ("all", *MIX):
        print(f"{kind:<8}{load[kind]['n']:>6}{load[kind]['p50_ms']:>9.0f}{load[kind]['p99_ms']:>9.0f}")
    print(f"errors: {load['errors']} {load['error_kinds']}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"limits": limits, "config": {"max_batch_size": args.batch_size, "num_cpus": args.num_cpus,
                                                    "max_concurrent_streams": cfg.max_concurrent_streams},
                       "short_under_streams": probe, "load": load}, f, indent=1)
    per_kind = " ".join(f"{kind}_{q}_ms={load[kind][f'{q}_ms']:.0f}" for kind in MIX for q in ("p50", "p99"))
    print(f"requests={load['requests']} errors={load['errors']} p50_ms={load['all']['p50_ms']:.0f} "
          f"p99_ms={load['all']['p99_ms']:.0f} {per_kind} short_under_7_streams_ms={probe['short_ms']:.0f} "
          f"streams_running_at_short={probe['streams_running']}")


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
    parser.add_argument("--load", action="store_true", help="mixed load and the short request under streams")
    parser.add_argument("--clients", type=int, default=16, help="--load: closed-loop clients")
    parser.add_argument("--duration", type=float, default=180.0, help="--load: seconds of mixed load")
    args = parser.parse_args()

    # Short rationales make prefill (which batching does not speed up) a large share of the cost, so
    # --quick keeps 24 tokens rather than fewer; served students write ~64-192.
    rationale_tokens, answer_tokens = (24, 4) if args.quick else (64, 8)
    if args.load:
        run_load(args, rationale_tokens, answer_tokens)
        return
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
        runs = [("batched", args.batch_size, "hf", plan), ("sequential", 1, "hf", {16: sequential_per_client}),
                ("vllm", args.batch_size, "vllm", {16: plan[16]})]
        for mode, batch_size, backend, levels in runs:
            cfg = ServeConfig(max_batch_size=batch_size, backend=backend, vllm={"max_model_len": 1024}, **common)
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
    vllm16 = results["vllm"][0]
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"limits": limits, "batch_size": args.batch_size, "num_cpus": args.num_cpus, **results}, f, indent=1)
    print(f"batched_over_sequential={ratio:.2f} p99_ms_16={batched16['p99_ms']:.0f} "
          f"vllm_over_hf={vllm16['rps'] / batched16['rps']:.2f} vllm_p99_ms_16={vllm16['p99_ms']:.0f}")


if __name__ == "__main__":
    main()
