"""A kfp.local run's console a person can read, and its full logs on disk.

kfp.local prints everything to the terminal: its own log lines (``logging`` through a
handler it installs on ``sys.stdout`` for each task), every line of every task's output
(read from the subprocess and ``print``-ed, indented), each task's outputs, the executor
JSON, and Python warnings; a cold demo run printed 3,251 lines. Here the run is watched at
the two places kfp.local itself uses, so nothing is scraped from terminal output:

* ``kfp.local.orchestrator.task_executor.execute_single_task`` (called by both of its
  orchestrators for every task): a step starts and ends, with its status and outputs;
* ``kfp.local.subprocess_task_handler.run_local_subprocess`` and, for the DockerRunner,
  ``kfp.local.docker_task_handler.run_docker_container`` (the functions that run a task's
  command): replaced by ones that write the task's output to its own log file and keep
  its exit code. When neither is called for a task, the task was a cache hit.

kfp.local's own printing (``sys.stdout``, ``sys.stderr``, warnings) goes to
``<run>/logs/kfp.log``; each task's output to ``<run>/logs/NN-<task>.log``. The console
gets one line per step as it starts and ends (name, cached or not, duration, key figure),
a progress line every ``progress_every`` seconds for a step still running, and on
failure the failing step's tail and its own ``error:`` line. ``verbose`` also echoes
everything to the console.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
ERROR_PREFIX = "error: "
# shrink.logs.progress writes "<desc>: <i>/<total> (<rate>/s, ~<n>s left)" when not on a terminal.
PROGRESS = re.compile(r"shrink: (.+: \d+(?:/\d+)? \(.*/s.*\))\s*$")
_LOCAL = threading.local()


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour and cursor codes."""
    return ANSI.sub("", text)


# How long a Docker API call may take before the run fails (docker-py's default is 60 s; see _run_docker_container).
DOCKER_API_TIMEOUT_S = 900


@dataclass
class StepRecord:
    """One task of the run as the console saw it."""

    task: str
    name: str
    log: Path
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    executed: bool = False
    ok: bool | None = None
    returncode: int | None = None
    figure: str = ""
    progress: str = ""

    @property
    def cached(self) -> bool:
        """Finished without running its command: kfp.local's cache had its outputs."""
        return self.ended is not None and self.ok is True and not self.executed

    @property
    def seconds(self) -> float:
        """Wall time so far, or in all once ended."""
        return (self.ended or time.monotonic()) - self.started

    def error_line(self) -> str | None:
        """The step's own last ``error:`` line (what ``component_main`` prints for a ShrinkError)."""
        if not self.log.is_file():
            return None
        found = None
        for line in self.log.read_text(errors="replace").splitlines():
            line = strip_ansi(line).strip()
            if line.startswith(ERROR_PREFIX):
                found = line[len(ERROR_PREFIX) :]
        return found

    def tail(self, lines: int = 15) -> list[str]:
        """The last ``lines`` non-empty lines of the step's log, colour codes stripped."""
        if not self.log.is_file():
            return []
        kept, in_json = [], False
        for raw in self.log.read_text(errors="replace").splitlines():
            line = strip_ansi(raw).rstrip()
            # KFP's executor prints its input and output as indented JSON blocks: noise in a tail.
            if line == "{":
                in_json = True
            elif in_json:
                in_json = line != "}"
            elif line.strip() and not line.startswith("[KFP Executor"):  # the executor's own bookkeeping
                kept.append(line)
        return kept[-lines:]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _count(value: Any) -> str:
    """A count as KFP gives it back (metadata numbers come back as floats): ``20.0`` -> ``20``."""
    number = _number(value)
    return f"{int(number):,}" if number is not None and number.is_integer() else str(value)


def key_figure(outputs: dict[str, Any], task: str = "") -> str:
    """The one number worth a glance from a task's outputs (artifact metadata or parameters)."""
    metadata: dict[str, Any] = {}
    params: dict[str, Any] = {}
    for key, value in (outputs or {}).items():
        meta = getattr(value, "metadata", None)
        if isinstance(meta, dict):
            for k, v in meta.items():
                metadata.setdefault(k, v)
        elif isinstance(value, str | int | float) and not isinstance(value, bool):
            params[key] = value
    parts = []
    if "train_examples" in metadata:
        parts.append(f"{_count(metadata['train_examples'])} train")
        if "labels" in metadata:  # a dataset has them; teacher logits only count texts
            parts.append(f"{_count(metadata['labels'])} labels")
    if task.startswith("fingerprint-data") and isinstance(params.get("Output"), str):
        return f"data {params['Output'][:12]}"
    if "fingerprint" in metadata:
        parts.append(f"data {str(metadata['fingerprint'])[:12]}")
    for key, fmt in (
        ("val_accuracy", "val acc {:.2%}"),
        ("accuracy", "acc {:.2%}"),
        ("p95_ms", "p95 {:.2f} ms"),
        ("size_mb", "{:.1f} MB"),
        ("sparsity", "sparsity {:.0%}"),
    ):
        number = _number(metadata.get(key))
        if number is not None:
            parts.append(fmt.format(number))
        if key == "val_accuracy" and "alpha" in metadata:
            # A distillation trial: which one, so that a search's "Distil student" lines can be told apart.
            if _number(metadata.get("num_layers")) is not None:
                parts.append(f"{_count(metadata['num_layers'])} layers")
            for name, k in (("alpha", "alpha"), ("T", "temperature"), ("lr", "learning_rate")):
                value = _number(metadata.get(k))
                if value is not None:
                    parts.append(f"{name} {value:g}")
    if "promoted" in metadata:
        what = f"promoted {metadata.get('candidate')} {metadata.get('version')}"
        parts.append(what if metadata.get("promoted") else "nothing promoted")
    elif "Output" in params and isinstance(params["Output"], str):
        parts.append(f"chose {params['Output'] or 'nothing'}")
    return ", ".join(parts)


def _fmt_seconds(s: float) -> str:
    return f"{s:.1f}s" if s < 60 else f"{int(s // 60)}m{int(s % 60):02d}s"


class _Sink:
    """A text stream that writes to the run's kfp log, and to the console too when verbose."""

    def __init__(self, log: TextIO, echo: TextIO | None):
        self._log, self._echo, self._lock = log, echo, threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._log.write(strip_ansi(text))
            self._log.flush()
            if self._echo is not None:
                self._echo.write(text)
        return len(text)

    def flush(self) -> None:
        self._log.flush()
        if self._echo is not None:
            self._echo.flush()

    def isatty(self) -> bool:
        return False


class RunConsole:
    """Watch a kfp.local run (see the module docstring); a context manager around the pipeline call."""

    def __init__(
        self, log_dir: str | Path, out: TextIO | None = None, verbose: bool = False, progress_every: float = 30.0
    ):
        self.log_dir = Path(log_dir)
        self.out = out or sys.stdout
        self.verbose = verbose
        self.progress_every = progress_every
        self.steps: list[StepRecord] = []
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._saved: list[tuple[Any, str, Any]] = []

    @property
    def kfp_log(self) -> Path:
        """kfp.local's own output: its log lines, executor JSON, warnings."""
        return self.log_dir / "kfp.log"

    # ------------------------------------------------------------------ console

    def say(self, line: str) -> None:
        """One line on the console (never into the captured streams)."""
        with self._lock:
            self.out.write(line + "\n")
            self.out.flush()

    def failed(self) -> StepRecord | None:
        """The first step that failed, if any."""
        return next((s for s in self.steps if s.ok is False), None)

    # ------------------------------------------------------------------ hooks

    def _execute_single_task(self, original):
        def wrapper(*args, **kwargs):
            task = kwargs.get("task_name") or (args[0] if args else "task")
            spec = kwargs.get("task_spec")
            name = (spec.task_info.name if spec is not None and spec.task_info.name else task) or task
            record = StepRecord(task, name, self.log_dir / f"{next(self._counter):02d}-{task}.log")
            with self._lock:
                self.steps.append(record)
            previous = getattr(_LOCAL, "record", None)
            _LOCAL.record = record
            try:
                outputs, task_status = original(*args, **kwargs)
            except BaseException:
                record.ok, record.ended = False, time.monotonic()
                raise
            finally:
                _LOCAL.record = previous
            record.ended = time.monotonic()
            record.ok = getattr(task_status, "name", str(task_status)) == "SUCCESS"
            if record.ok:
                record.figure = key_figure(outputs, task)
                how = "cached" if record.cached else _fmt_seconds(record.seconds)
                self.say(f"  {name}: done ({how})" + (f", {record.figure}" if record.figure else ""))
            else:
                code = f", exit code {record.returncode}" if record.returncode is not None else ""
                self.say(f"  {name}: FAILED after {_fmt_seconds(record.seconds)}{code}")
            return outputs, task_status

        return wrapper

    def _begin(self) -> tuple[StepRecord | None, Path]:
        """The running task's record, marked as executed (not a cache hit), and its log file."""
        record: StepRecord | None = getattr(_LOCAL, "record", None)
        if record is not None:
            if not record.executed:
                self.say(f"  {record.name} ...")
            record.executed = True
        return record, (record.log if record is not None else self.log_dir / "task.log")

    def _line(self, record: StepRecord | None, fh: TextIO, line: str) -> None:
        """One line of a task's output: to its log, its progress figure, and the console when verbose."""
        fh.write(line)
        fh.flush()
        if record is not None:
            match = PROGRESS.search(strip_ansi(line))
            if match:
                record.progress = match.group(1)
        if self.verbose:
            self.say(f"    | {line.rstrip()}")

    def _run_local_subprocess(self, full_command: list[str], env_vars: dict[str, str] | None = None) -> int:
        """kfp.local's ``run_local_subprocess``, with the output in the task's own log file."""
        record, log = self._begin()
        env = {**os.environ, **(env_vars or {})}
        with (
            open(log, "a", encoding="utf-8") as fh,
            subprocess.Popen(
                full_command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                bufsize=1,
                env=env,
                errors="replace",
            ) as proc,
        ):
            assert proc.stdout is not None
            for line in proc.stdout:
                self._line(record, fh, line)
            code = proc.wait()
        if record is not None:
            record.returncode = code
        return code

    def _run_docker_container(self, client: Any, image: str, command: list[str], volumes: dict, **run_args: Any) -> int:
        """kfp.local's ``run_docker_container`` (DockerRunner), with the output in the task's log and a true exit code.

        Why not kfp's own: it starts the container with ``auto_remove`` and, when the
        container is gone before its status is read, returns 0, so a step that failed quickly
        reads as a success. Here the container is kept until its exit code is read, then
        removed. kfp's pull of a missing image is kept: with no registry it fails at once.
        """
        import requests

        import docker
        from shrink.errors import ShrinkError

        record, log = self._begin()
        ref = image if ":" in image.rsplit("/", 1)[-1] else f"{image}:latest"
        # docker-py waits 60 s for an answer; creating a container under the vfs storage driver copies the
        # whole 2 GB image first (~50 s on a quiet 2-core machine), so a busy one timed out mid-run.
        client.api.timeout = max(client.api.timeout or 0, DOCKER_API_TIMEOUT_S)
        run_args = {k: v for k, v in run_args.items() if k not in ("auto_remove", "remove", "detach")}
        try:
            if not client.images.list(name=ref):
                client.images.pull(ref)
            box = client.containers.run(image=ref, command=command, detach=True, volumes=volumes, **run_args)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            step = record.name if record is not None else ref
            raise ShrinkError(f"{step}: the Docker engine could not start {ref}: {exc}") from None
        try:
            with open(log, "a", encoding="utf-8") as fh:
                pending = ""
                for chunk in box.logs(stream=True, follow=True):
                    pending += chunk.decode("utf-8", errors="replace")
                    *lines, pending = pending.split("\n")
                    for line in lines:
                        self._line(record, fh, line + "\n")
                if pending:
                    self._line(record, fh, pending + "\n")
            code = int(box.wait()["StatusCode"])
        finally:
            with contextlib.suppress(Exception):
                box.remove(force=True)
        if record is not None:
            record.returncode = code
        return code

    def _progress_loop(self) -> None:
        while not self._stop.wait(self.progress_every):
            for record in list(self.steps):
                if record.ended is None and record.executed and record.seconds >= self.progress_every:
                    detail = f": {record.progress}" if record.progress else ""
                    self.say(f"  {record.name}: running {_fmt_seconds(record.seconds)}{detail}")

    # ------------------------------------------------------------------ context

    def _patch(self, module: Any, attr: str, value: Any) -> None:
        self._saved.append((module, attr, getattr(module, attr)))
        setattr(module, attr, value)

    def __enter__(self) -> RunConsole:
        from kfp.local import docker_task_handler, subprocess_task_handler
        from kfp.local.orchestrator import task_executor

        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.kfp_log, "a", encoding="utf-8")  # noqa: SIM115 - closed in __exit__
        sink = _Sink(self._log, self.out if self.verbose else None)
        self._streams = (sys.stdout, sys.stderr)
        sys.stdout = sys.stderr = sink  # type: ignore[assignment]
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sink.write(
            warnings.formatwarning(message, category, filename, lineno, line)
        )
        self._patch(task_executor, "execute_single_task", self._execute_single_task(task_executor.execute_single_task))
        self._patch(subprocess_task_handler, "run_local_subprocess", self._run_local_subprocess)
        self._patch(docker_task_handler, "run_docker_container", self._run_docker_container)
        self._ticker = threading.Thread(target=self._progress_loop, daemon=True)
        self._ticker.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for module, attr, value in reversed(self._saved):
            setattr(module, attr, value)
        self._saved.clear()
        with contextlib.suppress(Exception):
            self._warnings.__exit__(None, None, None)
        sys.stdout, sys.stderr = self._streams
        self._log.close()
