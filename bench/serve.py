"""Load test of ``shrink serve``: real HTTP on loopback, closed loop, CLINC150 test queries with repeats.

Not CI (for ``make bench``). One run measures, on the same machine in the same
minutes:

- **the ceiling**: the model's own best single-core throughput (batch 1, 8, 32
  and 64 through ``open_classifier``, one intra-op thread, no HTTP), in a
  process pinned to the server's core;
- **shrink mode** (dynamic batching + answer cache), **batching without the
  cache**, and **naive mode** (batch 1, no cache) at closed-loop concurrency 1,
  8, 32 and 64, the server on one core and one intra-op thread, the client
  (asyncio + aiohttp) pinned to another core; each level sends its own slice of
  the 5,500 test queries with 40% of the requests repeating an earlier query of
  that slice, so every level starts with a cold cache;
- the **teacher** in shrink and naive mode (``--teacher``), where batching
  matters more;
- a **hot swap**: the server follows the ``production`` alias in a SeaweedFS
  started for the run, and a second version is promoted half way through a
  concurrency-32 run; failed requests and answers from the old version after
  the first answer from the new one are counted;
- **agreement**: the labels served for all 5,500 queries (shrink mode,
  concurrency 32, batched) against ``open_classifier(...).predict`` one query
  at a time;
- the serving worker's **peak RSS**, and its CPU time per request split into
  model, tokenization and the rest (HTTP, JSON, KServe).

Every level is bounded in requests and seconds.

    .venv/bin/python bench/serve.py --model ARTIFACT [--teacher ARTIFACT] | --decision results/latest/decision.json
        [--clinc ../shared/data/clinc150]
        [--requests 2000] [--level-seconds 30] [--concurrency 1,8,32,64] [--server-core 0] [--client-core 1]
        [--protocol v1|v2] [--swap-seconds 30] [--no-swap] [--out results/serve]

Results go to ``<out>/serve-bench.json`` and ``<out>/serve-bench.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


# --------------------------------------------------------------------------- data


def clinc_test_texts(clinc: Path) -> list[str]:
    """The 5,500 CLINC150 "plus" test queries (4,500 in scope, 1,000 out of scope), in file order."""
    data = json.loads((clinc / "data_oos_plus.json").read_text())
    return [text for text, _ in data["test"] + data["oos_test"]]


def workload(texts: list[str], n: int, repeat: float, rng: random.Random) -> list[str]:
    """``n`` requests over ``texts``: with probability ``repeat`` an earlier request of this workload again."""
    fresh, sent, out = iter(texts), [], []
    for _ in range(n):
        text = None
        if sent and rng.random() < repeat:
            text = sent[rng.randrange(len(sent))]
        else:
            text = next(fresh, None)
            if text is None:  # slice exhausted: repeat instead
                text = sent[rng.randrange(len(sent))]
            else:
                sent.append(text)
        out.append(text)
    return out


# --------------------------------------------------------------------------- the ceiling (no HTTP)


def ceiling_main(model: str, texts_file: str, out_file: str) -> None:
    """In a pinned subprocess: the model's own throughput, its batch-1 costs, and its batch-1 predictions."""
    import resource

    import numpy as np

    from shrink.runtime import open_classifier

    texts = json.loads(Path(texts_file).read_text())
    clf = open_classifier(model, threads=1)
    for t in texts[:50]:
        clf.predict([t])
    sample = texts[: min(1000, len(texts))]
    encode_ms, model_ms = [], []
    t0 = time.perf_counter()
    for t in sample:
        a = time.perf_counter()
        enc = clf.encode([t])
        b = time.perf_counter()
        clf.logits(enc).argmax(axis=-1)
        c = time.perf_counter()
        encode_ms.append((b - a) * 1e3)
        model_ms.append((c - b) * 1e3)
    batch1 = len(sample) / (time.perf_counter() - t0)
    throughput = {"1": batch1}
    for b in (8, 32, 64):
        batches = [texts[i : i + b] for i in range(0, min(len(texts), 1024), b)]
        clf.predict(batches[0])
        t0 = time.perf_counter()
        for batch in batches:
            clf.predict(batch)
        throughput[str(b)] = sum(len(x) for x in batches) / (time.perf_counter() - t0)
    predictions = [clf.label_names[int(clf.predict([t])[0])] for t in texts]
    out = {
        "throughput_qps": throughput,
        "best_qps": max(throughput.values()),
        "best_batch": max(throughput, key=throughput.get),
        "encode_ms_p50": float(np.median(encode_ms)),
        "model_ms_p50": float(np.median(model_ms)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_imported": "torch" in sys.modules,
        "predictions": predictions,
    }
    Path(out_file).write_text(json.dumps(out))


def _pinned(core: int):
    return lambda: os.sched_setaffinity(0, {core})


def measure_ceiling(model: Path, label: str, texts: list[str], core: int, work: Path) -> dict:
    """Run :func:`ceiling_main` on ``core`` in a fresh process."""
    texts_file, out_file = work / f"texts-{label}.json", work / f"ceiling-{label}.json"
    texts_file.write_text(json.dumps(texts))
    cmd = [sys.executable, __file__, "ceiling", str(model), str(texts_file), str(out_file)]
    subprocess.run(cmd, check=True, preexec_fn=_pinned(core), env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=1800)
    return json.loads(out_file.read_text())


# --------------------------------------------------------------------------- the server


class Server:
    """``shrink serve`` pinned to one core, one intra-op thread, on a free loopback port."""

    def __init__(self, model: str, core: int, work: Path, name: str, args: list[str], env: dict | None = None):
        from shrink.storage import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = name
        self.log = work / f"serve-{name}-{self.port}.log"
        cmd = [
            sys.executable,
            "-m",
            "shrink.cli",
            "serve",
            "--model",
            model,
            "--name",
            name,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--threads",
            "1",
            *args,
        ]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                cmd,
                cwd=work,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_pinned(core),
                env={**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)},
            )

    def get(self, path: str) -> tuple[int, str]:
        """(status, body) of a GET."""
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def wait(self, ready: bool = True, timeout: float = 180.0) -> Server:
        """Block until the server is ready (or only live), bounded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited:\n{self.log.read_text()[-3000:]}")
            try:
                if self.get("/v2/health/ready" if ready else "/v2/health/live")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"server not ready after {timeout} s:\n{self.log.read_text()[-3000:]}")

    def metrics(self) -> dict[str, float]:
        """``/metrics`` as {series with labels: value} (shrink_serve_* only)."""
        out = {}
        for line in self.get("/metrics")[1].splitlines():
            if line.startswith("shrink_serve_"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        """The server process's peak resident memory (VmHWM)."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 30 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _series(metrics: dict[str, float], name: str) -> float:
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


def _batch_counts(metrics: dict[str, float]) -> dict[int, float]:
    cumulative = {}
    for k, v in metrics.items():
        m = re.match(r'shrink_serve_batch_size_bucket\{le="([^"]+)"', k)
        if m and m.group(1) != "+Inf":
            cumulative[int(float(m.group(1)))] = v
    return cumulative


def batch_histogram(before: dict, after: dict) -> dict[str, int]:
    """Batches per size range during a level (from the cumulative Prometheus buckets)."""
    a, b = _batch_counts(before), _batch_counts(after)
    out, prev_le, prev = {}, 0, 0.0
    for le in BATCH_BUCKETS:
        cum = b.get(le, 0.0) - a.get(le, 0.0)
        if cum - prev:
            out[str(le) if le - prev_le == 1 else f"{prev_le + 1}-{le}"] = int(cum - prev)
        prev_le, prev = le, cum
    return out


# --------------------------------------------------------------------------- the client


async def closed_loop(server: Server, texts: list[str], concurrency: int, seconds: float, protocol: str) -> dict:
    """``concurrency`` clients, each sending its next request when the last is answered."""
    import aiohttp

    if protocol == "v1":
        url = f"{server.url}/v1/models/{server.name}:predict"

        def body(t):
            return {"instances": [t]}
    else:
        url = f"{server.url}/v2/models/{server.name}/infer"

        def body(t):
            return {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [t]}]}

    results: list[tuple[float, float, int, str | None, str | None]] = []
    next_index = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client():
            nonlocal next_index
            while next_index < len(texts) and time.monotonic() < deadline:
                i = next_index
                next_index += 1
                start = time.monotonic()
                version = label = None
                try:
                    async with session.post(url, json=body(texts[i])) as r:
                        status = r.status
                        data = await r.json(content_type=None)
                    if status == 200:
                        version = data.get("model_version")
                        if protocol == "v1":
                            label = data["predictions"][0]["label"]
                        else:
                            label = data["outputs"][0]["data"][0]
                except (aiohttp.ClientError, ValueError, KeyError):
                    status = -1
                results.append((start, time.monotonic(), status, version, label))

        t0 = time.monotonic()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.monotonic() - t0
    return {"results": results, "elapsed": elapsed}


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))] if s else float("nan")


def level(server: Server, texts: list[str], concurrency: int, seconds: float, protocol: str) -> dict:
    """One closed-loop level: throughput, latency percentiles, errors, cache and batches from /metrics."""
    before, cpu0 = server.metrics(), server.cpu_seconds()
    run = asyncio.run(closed_loop(server, texts, concurrency, seconds, protocol))
    after, cpu1 = server.metrics(), server.cpu_seconds()
    ok = [(end - start) * 1e3 for start, end, status, *_ in run["results"] if status == 200]
    n = len(run["results"])
    hits = _series(after, "shrink_serve_cache_hits_total") - _series(before, "shrink_serve_cache_hits_total")
    misses = _series(after, "shrink_serve_cache_misses_total") - _series(before, "shrink_serve_cache_misses_total")
    batches = _series(after, "shrink_serve_batch_size_count") - _series(before, "shrink_serve_batch_size_count")
    batched = _series(after, "shrink_serve_batch_size_sum") - _series(before, "shrink_serve_batch_size_sum")
    return {
        "concurrency": concurrency,
        "requests": n,
        "errors": n - len(ok),
        "seconds": run["elapsed"],
        "rps": len(ok) / run["elapsed"],
        "p50_ms": _pct(ok, 0.50),
        "p95_ms": _pct(ok, 0.95),
        "p99_ms": _pct(ok, 0.99),
        "cache_hit_rate": hits / (hits + misses) if hits + misses else 0.0,
        "mean_batch": batched / batches if batches else 0.0,
        "batch_histogram": batch_histogram(before, after),
        "server_cpu_ms_per_request": (cpu1 - cpu0) * 1e3 / max(1, n),
        "labels": {texts[i]: r[4] for i, r in enumerate(run["results"]) if r[2] == 200},
    }


# --------------------------------------------------------------------------- modes, swap, agreement

MODES = {
    "shrink": [],  # defaults: dynamic batching (<= 32, no wait) + LRU cache
    "batching, no cache": ["--cache-size", "0"],
    "naive": ["--max-batch-size", "1", "--cache-size", "0"],
}


def run_modes(model: Path, label: str, modes: list[str], slices: list[list[str]], args, work: Path) -> list[dict]:
    """Every mode of one model at every concurrency level, one fresh server per mode."""
    rows = []
    for mode in modes:
        server = Server(str(model), args.server_core, work, "model", MODES[mode]).wait()
        try:
            for concurrency, texts in zip(args.concurrency, slices, strict=True):
                row = level(server, texts, concurrency, args.level_seconds, args.protocol)
                row.pop("labels")
                rows.append({"model": label, "mode": mode, **row})
                print(
                    f"{label:8s} {mode:20s} c={concurrency:<3d} {row['rps']:7.0f} req/s  p50 {row['p50_ms']:6.2f}"
                    f"  p95 {row['p95_ms']:6.2f}  p99 {row['p99_ms']:6.2f} ms  errors {row['errors']}  "
                    f"hits {row['cache_hit_rate']:.0%}  batch {row['mean_batch']:.1f}",
                    flush=True,
                )
            rows[-1]["peak_rss_mb"] = server.peak_rss_mb()
        finally:
            server.stop()
    return rows


def agreement(model: Path, texts: list[str], reference: list[str], args, work: Path) -> dict:
    """Served labels (shrink mode, batched, cache off so every text is computed) against batch-1 predict."""
    out = {}
    for mode, extra in (("shrink (batched)", ["--cache-size", "0"]), ("naive", MODES["naive"])):
        server = Server(str(model), args.server_core, work, "model", extra).wait()
        try:
            unique = list(dict.fromkeys(texts))
            row = level(server, unique, 32, 600, args.protocol)
            served = row["labels"]
            expected = dict(zip(texts, reference, strict=True))
            diff = [t for t in unique if served.get(t) != expected[t]]
            out[mode] = {"texts": len(unique), "answered": len(served), "mismatches": len(diff), "examples": diff[:5]}
            print(
                f"agreement {mode}: {len(unique) - len(diff)}/{len(unique)} equal to open_classifier.predict",
                flush=True,
            )
        finally:
            server.stop()
    return out


def hot_swap(model: Path, swap_to: Path | None, texts: list[str], args, work: Path) -> dict:
    """Serve the alias in a fresh SeaweedFS; promote a second version half way through a c=32 run."""
    from shrink.artifact import read_meta, reseal
    from shrink.promote import alias_uri, promote
    from shrink.slo import gate_config
    from shrink.storage import SeaweedServer

    store = SeaweedServer.on_free_ports(work / "seaweedfs")
    store.start(log_path=work / "seaweedfs.log")
    try:
        store.wait_ready(timeout=120)
        store.create_buckets(["shrink-models"])
        saved = {k: os.environ.get(k) for k in store.env()}
        os.environ.update(store.env())
        name = "serve-bench"
        registry = "s3://shrink-models"
        if swap_to is None:  # the same weights as a new version: a real download, load and warm-up
            swap_to = work / "swap-version"
            shutil.rmtree(swap_to, ignore_errors=True)
            shutil.copytree(model, swap_to)
            (swap_to / "swap-marker.txt").write_text("a second version for the hot-swap run\n")
            reseal(swap_to, like=read_meta(model))

        def publish(artifact: Path, candidate: str, current: str | None) -> dict:
            meta = read_meta(artifact)
            decision = {
                "chosen": candidate,
                "production": {"version": current},
                "records": {candidate: {"artifact": {"content_hash": meta.content_hash()}}},
            }
            return promote(artifact, decision, gate_config({"slos": [], "model_name": name}), name, registry)

        first = publish(model, "first", None)
        server = Server(
            alias_uri(name, registry), args.server_core, work, name, ["--poll-seconds", "0.5"], env=store.env()
        ).wait()
        try:
            promoted: dict = {}

            async def run():
                # Time-bounded: the texts cycle until the deadline; the promotion comes a third of the way in.
                cycled = texts * math.ceil(200_000 / len(texts))
                task = asyncio.create_task(closed_loop(server, cycled, 32, args.swap_seconds, args.protocol))
                await asyncio.sleep(args.swap_seconds / 3)
                promoted["at"] = time.monotonic()
                promoted["pointer"] = await asyncio.to_thread(publish, swap_to, "second", first["version"])
                return await task

            loop_result = asyncio.run(run())
            second = promoted.get("pointer")
            results = loop_result["results"]
            errors = [r for r in results if r[2] != 200]
            new = [r for r in results if second and r[3] == second["version"]]
            first_new = min((r[1] for r in new), default=None)
            late_old = [r for r in results if first_new is not None and r[0] > first_new and r[3] == first["version"]]
            ok = [(r[1] - r[0]) * 1e3 for r in results if r[2] == 200]
            out = {
                "requests": len(results),
                "errors": len(errors),
                "rps": len(ok) / loop_result["elapsed"],
                "p95_ms": _pct(ok, 0.95),
                "p99_ms": _pct(ok, 0.99),
                "answers_old": sum(1 for r in results if r[3] == first["version"]),
                "answers_new": len(new),
                "old_after_first_new": len(late_old),
                "swap_seconds": (first_new - promoted["at"]) if first_new and promoted else None,
                "versions": [first["version"], second["version"] if second else None],
            }
            print(f"hot swap: {out}", flush=True)
            return out
        finally:
            server.stop()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    finally:
        store.stop()


# --------------------------------------------------------------------------- report


def markdown(result: dict) -> str:
    """The result as a Markdown table and notes, as the README shows it."""
    lines = [
        "| model | mode | clients | req/s | % of ceiling | p50 ms | p95 ms | p99 ms | errors | cache hits "
        "| mean batch | batch sizes (batches) | server CPU ms/req |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["levels"]:
        ceiling = result["ceiling"][row["model"]]["best_qps"]
        hist = ", ".join(f"{k}: {v}" for k, v in row["batch_histogram"].items())
        lines.append(
            f"| {row['model']} | {row['mode']} | {row['concurrency']} | {row['rps']:.0f} | "
            f"{100 * row['rps'] / ceiling:.0f}% | {row['p50_ms']:.2f} | {row['p95_ms']:.2f} | "
            f"{row['p99_ms']:.2f} | {row['errors']} | {row['cache_hit_rate']:.0%} | {row['mean_batch']:.1f} | "
            f"{hist} | {row['server_cpu_ms_per_request']:.2f} |"
        )
    lines.append("")
    for label, c in result["ceiling"].items():
        qps = ", ".join(f"batch {b}: {q:.0f}" for b, q in c["throughput_qps"].items())
        lines.append(
            f"- ceiling, {label}: {c['best_qps']:.0f} req/s (batch {c['best_batch']}; {qps}); batch 1 "
            f"tokenize {c['encode_ms_p50']:.3f} ms + model {c['model_ms_p50']:.3f} ms (p50); "
            f"peak RSS without HTTP {c['peak_rss_mb']:.0f} MB, torch imported: {c['torch_imported']}"
        )
    for row in result["levels"]:
        if "peak_rss_mb" in row:
            lines.append(f"- peak RSS of the serving worker, {row['model']} {row['mode']}: {row['peak_rss_mb']:.0f} MB")
    if result.get("agreement"):
        for mode, a in result["agreement"].items():
            lines.append(
                f"- agreement ({mode}): {a['texts'] - a['mismatches']}/{a['texts']} labels equal to "
                f"open_classifier(...).predict one query at a time"
            )
    if result.get("hot_swap"):
        s = result["hot_swap"]
        lines.append(
            f"- hot swap at 32 clients: {s['requests']} requests, {s['errors']} errors, {s['rps']:.0f} req/s, "
            f"p95 {s['p95_ms']:.2f} ms; {s['answers_old']} answers from the old version, "
            f"{s['answers_new']} from the new, {s['old_after_first_new']} from the old after the first "
            f"from the new; promotion to first new answer {s['swap_seconds'] or float('nan'):.2f} s"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run every measurement; write JSON and Markdown under ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="artifact to serve (e.g. the ORT INT8 model)")
    parser.add_argument("--decision", type=Path, help="a run's decision.json: serve its chosen model (and teacher)")
    parser.add_argument("--teacher", type=Path, help="also serve the teacher (shrink and naive mode)")
    parser.add_argument("--swap-to", type=Path, help="the version promoted mid-run (default: the model re-sealed)")
    parser.add_argument("--clinc", type=Path, default=ROOT / ".." / "shared" / "data" / "clinc150")
    parser.add_argument("--requests", type=int, default=2000, help="requests per level (at most)")
    parser.add_argument("--level-seconds", type=float, default=30.0, help="seconds per level (at most)")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32, 64])
    parser.add_argument("--repeat", type=float, default=0.4, help="share of requests repeating an earlier one")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--client-core", type=int, default=1)
    parser.add_argument("--protocol", choices=["v1", "v2"], default="v1")
    parser.add_argument("--swap-seconds", type=float, default=30.0, help="length of the hot-swap run")
    parser.add_argument("--no-swap", action="store_true", help="skip the hot-swap run (needs SeaweedFS)")
    parser.add_argument("--no-agreement", action="store_true", help="skip serving all 5,500 queries once")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "serve")
    args = parser.parse_args(argv)
    if args.decision:  # the chosen candidate and the teacher, from the benchmark records the gate decided on
        records = json.loads(args.decision.read_text())["records"]
        chosen = json.loads(args.decision.read_text()).get("chosen")
        if not chosen:
            parser.error(f"{args.decision}: no candidate was chosen")
        args.model = args.model or Path(records[chosen]["artifact"]["uri"])
        args.teacher = args.teacher or Path(records["teacher"]["artifact"]["uri"])
    if args.model is None:
        parser.error("--model or --decision is required")
    if args.server_core == args.client_core:
        parser.error("--server-core and --client-core must differ")
    os.sched_setaffinity(0, {args.client_core})
    from shrink.logs import setup_logging

    setup_logging()
    texts = clinc_test_texts(args.clinc)
    rng = random.Random(0)
    order = texts[:]
    rng.shuffle(order)
    unique_per_level = math.ceil(args.requests * (1 - args.repeat)) + 1
    if unique_per_level * len(args.concurrency) > len(order):
        parser.error(
            f"--requests {args.requests} x {len(args.concurrency)} levels needs more than the "
            f"{len(order)} test queries without repeats across levels"
        )
    slices = [
        workload(order[k * unique_per_level : (k + 1) * unique_per_level], args.requests, args.repeat, rng)
        for k in range(len(args.concurrency))
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "ceiling": {}, "levels": []}
    try:
        models = [("model", args.model)] + ([("teacher", args.teacher)] if args.teacher else [])
        for label, path in models:
            c = measure_ceiling(path, label, texts, args.server_core, work)
            result["ceiling"][label] = {k: v for k, v in c.items() if k != "predictions"}
            print(
                f"ceiling {label}: {c['best_qps']:.0f} req/s (batch {c['best_batch']}), {c['throughput_qps']}",
                flush=True,
            )
            modes = list(MODES) if label == "model" else ["shrink", "naive"]
            result["levels"] += run_modes(path, label, modes, slices, args, work)
            if label == "model" and not args.no_agreement:
                result["agreement"] = agreement(path, texts, c["predictions"], args, work)
        if not args.no_swap:
            result["hot_swap"] = hot_swap(args.model, args.swap_to, slices[min(2, len(slices) - 1)], args, work)
    finally:
        (args.out / "serve-bench.json").write_text(json.dumps(result, indent=2))
        if result["levels"]:
            (args.out / "serve-bench.md").write_text(markdown(result))
            print(markdown(result))
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "ceiling":
        ceiling_main(*sys.argv[2:5])
    else:
        raise SystemExit(main())
