"""The ``shrink`` command line.

    shrink store up|down|status         the local SeaweedFS object store
    shrink data --config C              prepare the data and print what was loaded
    shrink run --config C               run the whole pipeline locally (kfp.local)
    shrink compile --config C -o F      write the KFP IR YAML for a cluster
    shrink submit|schedule|runs ...     start, schedule and list runs on Kubeflow
    shrink promote --rollback ...       point production back at the previous version
    shrink registry list|gc ...         promoted and never-promoted versions; remove orphans
    shrink serve --model DIR|ALIAS      serve a model over KServe's v1 and v2 protocols

Expected failures (bad input, a store that is down) print one ``error:`` line
and exit 1; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shrink.errors import ShrinkError


def _config(args, local: bool = False):
    """The config, read through the guarded reader, and everything it alone decides checked (shrink/preflight.py)."""
    from shrink import preflight
    from shrink.config import load_pipeline_config

    cfg = load_pipeline_config(args.config)
    preflight.check(cfg, args.config, local=local)
    return cfg


def cmd_store(args) -> int:
    """`shrink store up|down|status`: the local SeaweedFS."""
    from shrink import storage

    if args.action == "up":
        server = storage.store_up(args.state_dir, s3_port=args.port)
        print(
            f"SeaweedFS S3 at {server.endpoint} (data in {server.data_dir}); "
            f"credentials in {Path(args.state_dir) / storage.ENV_FILE}"
        )
    elif args.action == "down":
        print("stopped" if storage.store_down(args.state_dir) else "not running")
    else:
        server = storage.store_status(args.state_dir)
        if server is None:
            print("not running")
            return 3
        print(f"running: {server.endpoint} pid {server.pid}")
    return 0


def cmd_data(args) -> int:
    """`shrink data`: load the configured data and print what a run would see."""
    from shrink import storage
    from shrink.config import load_pipeline_config
    from shrink.data import describe, load_dataset

    cfg = load_pipeline_config(args.config)
    storage.load_local_env(args.state_dir)  # as `run` does: an s3:// source reaches the local store
    info = describe(load_dataset(cfg.data), cfg.data.source)
    counts = " / ".join(f"{info.counts[s]:,} {s}" for s in ("train", "validation", "test"))
    print(f"{cfg.data.source}: {counts}; {len(info.label_names)} labels" + (" (oos included)" if info.has_oos else ""))
    return 0


def cmd_run(args) -> int:
    """`shrink run`: the whole pipeline through kfp.local, then the candidate table."""
    from pipelines.local import run_local
    from shrink import storage

    cfg = _config(args, local=True)
    storage.load_local_env(args.state_dir)
    summary = run_local(  # a failed step raises ShrinkError with the step's own error line
        cfg,
        run_id=args.run_id,
        results_dir=args.results,
        state_dir=args.state_dir,
        caching=not args.no_cache,
        verbose=args.verbose,
        runner=args.runner,
    )
    from shrink.report import format_table

    print(format_table(summary["decision"]))
    chosen = summary["chosen"] or "nothing (no candidate met the SLOs)"
    print(f"\npromoted: {chosen}")
    print(f"results:  {summary['results_dir']}/ (summary.json, decision.json, report.html); also results/latest/")
    print(f"artifacts: {summary['pipeline_root']}")
    return 0


def cmd_compile(args) -> int:
    """`shrink compile`: KFP IR YAML for a cluster, placement checked first."""
    from pipelines.cluster_checks import validate_placement
    from pipelines.compression import compile_pipeline
    from shrink import files

    cfg = _config(args)
    files.check_writable(args.output)
    validate_placement(cfg)
    print(compile_pipeline(cfg, args.output))
    return 0


def cmd_submit(args) -> int:
    """`shrink submit`: start a run on a Kubeflow cluster."""
    from pipelines.submit import submit

    cfg = _config(args)
    url = submit(cfg, host=args.host, token=args.token, experiment=args.experiment)
    print(url)
    return 0


def cmd_schedule(args) -> int:
    """`shrink schedule`: a recurring run for scheduled retraining."""
    from pipelines.submit import schedule

    cfg = _config(args)
    print(
        schedule(
            cfg,
            host=args.host,
            token=args.token,
            experiment=args.experiment,
            cron=args.cron,
            max_concurrency=args.max_concurrency,
        )
    )
    return 0


def cmd_runs(args) -> int:
    """`shrink runs`: recent runs and their gate outcome, one JSON object a line."""
    from pipelines.submit import list_runs

    for run in list_runs(host=args.host, token=args.token, experiment=args.experiment, limit=args.limit):
        print(json.dumps(run))
    return 0


def cmd_promote(args) -> int:
    """`shrink promote --rollback`: point production back at the previous version."""
    from shrink import promote, storage

    storage.load_local_env(args.state_dir)
    if not args.rollback:
        raise ShrinkError(
            "promote: promotion happens in the pipeline's gate; use --rollback to restore the previous version"
        )
    pointer = promote.rollback(args.model_name, args.registry)
    print(f"production -> {pointer['version']} ({pointer['uri']})")
    return 0


def cmd_registry(args) -> int:
    """`shrink registry list|gc`: what the registry holds, and removal of what no alias or history names."""
    from shrink import registry, storage

    storage.load_local_env(args.state_dir)
    if args.action == "list":
        print(json.dumps(registry.inventory(args.model_name, args.registry).as_dict(), indent=2))
        return 0
    report = registry.gc(
        args.model_name, args.registry, grace_s=registry.parse_duration(args.grace), dry_run=not args.yes
    )
    for line in registry.describe(report):
        print(line)
    return 0


def cmd_serve(args) -> int:
    """`shrink serve`: answer texts over HTTP with an artifact, or whatever the production alias names."""
    from shrink.serving import lean

    lean.enter()  # before anything imports KServe: this process (and its workers) only serve
    from shrink import storage
    from shrink.config import from_dict, load_yaml
    from shrink.serving.config import ServeConfig

    storage.load_local_env(args.state_dir)
    flags = {k: v for k, v in vars(args).items() if k in SERVE_FLAGS and v is not None}
    if args.config:
        cfg = load_yaml(ServeConfig, args.config, section="serve")
        cfg = from_dict(ServeConfig, {**vars(cfg), **flags}, f"{args.config}:serve + flags")
    else:
        cfg = from_dict(ServeConfig, flags, "serve flags")
    from shrink.serving.server import serve

    serve(cfg)
    return 0


# `shrink serve` flags that are ServeConfig fields (the rest of its settings come from --config).
SERVE_FLAGS = (
    "model",
    "name",
    "host",
    "port",
    "workers",
    "intra_op_threads",
    "max_batch_size",
    "max_latency_ms",
    "model_thread",
    "cache_size",
    "poll_seconds",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; one sub-command per function above."""
    parser = argparse.ArgumentParser(prog="shrink", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", default=".shrink", help="local state: object store data, runs, cache")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("store", help="run the local SeaweedFS object store")
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--port", type=int, default=8333, help="S3 port on 127.0.0.1")
    p.set_defaults(func=cmd_store)

    p = sub.add_parser("data", help="load the configured data and print its splits and labels")
    p.add_argument("--config", required=True)
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("run", help="run the pipeline locally with kfp.local")
    p.add_argument("--config", required=True)
    p.add_argument("--run-id")
    p.add_argument("--results", default="results")
    p.add_argument("--no-cache", action="store_true", help="recompute every step")
    p.add_argument("--verbose", action="store_true", help="also show kfp.local's and every step's own output")
    p.add_argument(
        "--runner",
        choices=["subprocess", "docker"],
        default="subprocess",
        help="kfp.local runner: subprocesses of this Python, or the component images (make images)",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("compile", help="write the KFP IR YAML")
    p.add_argument("--config", required=True)
    p.add_argument("-o", "--output", default="pipeline.yaml")
    p.set_defaults(func=cmd_compile)

    for name, func, help_ in (
        ("submit", cmd_submit, "start a run on Kubeflow"),
        ("schedule", cmd_schedule, "create a recurring run on Kubeflow"),
        ("runs", cmd_runs, "list recent runs on Kubeflow"),
    ):
        p = sub.add_parser(name, help=help_)
        if name != "runs":
            p.add_argument("--config", required=True)
        p.add_argument("--host", required=True, help="KFP API endpoint, e.g. https://kubeflow.example.com/pipeline")
        p.add_argument("--token", help="bearer token (default: the kfp SDK's usual credentials)")
        p.add_argument("--experiment", default="shrink")
        if name == "schedule":
            p.add_argument("--cron", required=True, help="six-field cron, e.g. '0 0 3 * * 1' (Mondays 03:00)")
            p.add_argument("--max-concurrency", type=int, default=1)
        if name == "runs":
            p.add_argument("--limit", type=int, default=10)
        p.set_defaults(func=func)

    p = sub.add_parser("promote", help="manage the production alias")
    p.add_argument("--rollback", action="store_true", help="point production at the previous version")
    p.add_argument("--model-name", required=True)
    p.add_argument("--registry", default="s3://shrink-models", help="registry root URI")
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("registry", help="list a model's versions; remove never-promoted uploads and staging")
    p.add_argument("action", choices=["list", "gc"])
    p.add_argument("--model-name", required=True)
    p.add_argument("--registry", default="s3://shrink-models", help="registry root URI")
    p.add_argument("--grace", default="24h", help="gc: keep anything newer than this (e.g. 3600s, 30m, 6h, 2d)")
    p.add_argument("--yes", action="store_true", help="gc: delete (without it, only report what would go)")
    p.set_defaults(func=cmd_registry)
    p = sub.add_parser("serve", help="serve a model over KServe's protocols (v1, v2), following the alias")
    p.add_argument("--model", help="artifact directory, or s3://<bucket>/<model>/production.json to follow")
    p.add_argument("--config", help="YAML file whose `serve` section holds any ServeConfig setting")
    p.add_argument("--name", help="model name in the URLs (default: the registry model name, or 'model')")
    p.add_argument("--host", help="listen address (default 0.0.0.0; 127.0.0.1 keeps it local)")
    p.add_argument("--port", type=int, help="HTTP port (default 8080)")
    p.add_argument("--workers", type=int, help="server processes, each with its own model (default 1)")
    p.add_argument("--threads", dest="intra_op_threads", type=int, help="intra-op threads per worker (default 1)")
    p.add_argument("--max-batch-size", type=int, help="most texts per model run; 1 turns batching off (default 8)")
    p.add_argument("--max-latency-ms", type=float, help="longest wait for a batch to fill (default 0)")
    p.add_argument(
        "--model-thread",
        action="store_true",
        default=None,
        help="run batches on a thread of their own (pays where each worker has a spare core; default off)",
    )
    p.add_argument("--cache-size", type=int, help="answers kept in the LRU cache; 0 turns it off (default 10000)")
    p.add_argument("--poll-seconds", type=float, help="how often the alias is read (default 10)")
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``shrink`` console script; returns the exit code."""
    from shrink.logs import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        return args.func(args)
    except ShrinkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
