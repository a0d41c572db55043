"""The connection to a Kubeflow Pipelines API: token, health probe, client, and one-line errors.

Authentication uses the kfp SDK's usual means: ``token`` (``--token``), the
token file named by ``KF_PIPELINES_SA_TOKEN_PATH`` (a KFP pod or notebook),
otherwise kfp's own discovery (in-cluster service account, kube config).

The kfp client waits long on a silent host, prints links and warnings, and
raises its generated API's exceptions; everything here exists so that a call
either answers within its timeout or fails with one ``ShrinkError`` line that
says what to fix (address, port-forward, token).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from shrink.errors import ShrinkError

_SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"


def _token_file() -> str | None:
    path = os.environ.get("KF_PIPELINES_SA_TOKEN_PATH")
    if not path and os.path.isfile(_SA_TOKEN_PATH):
        path = _SA_TOKEN_PATH
    return path or None


def _read_token(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ShrinkError(
            f"{path}: cannot read the KFP token file (KF_PIPELINES_SA_TOKEN_PATH): {exc.strerror}"
        ) from None


def probe(host: str, token: str | None = None, timeout_s: float = 10.0) -> dict[str, Any]:
    """Ask the KFP API's health endpoint, quickly, and explain any failure in one line.

    kfp.Client itself retries its health check for half a minute and waits
    without a timeout on a silent host; this answers within ``timeout_s``.
    """
    import requests

    if not re.match(r"https?://", host):
        raise ShrinkError(
            f"KFP host {host!r} needs a scheme: http://localhost:8080 (after "
            "`kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80`) or https://<kubeflow>/pipeline"
        )
    url = host.rstrip("/") + "/apis/v2beta1/healthz"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        resp = requests.get(url, headers=headers, timeout=(timeout_s, timeout_s), allow_redirects=False)
    except requests.exceptions.SSLError as exc:
        raise ShrinkError(f"KFP at {host}: TLS failed ({_first_line(exc)}); check address and CA") from None
    except requests.exceptions.Timeout:
        raise ShrinkError(
            f"KFP at {host} did not answer within {timeout_s:g}s; check the address, VPN or port-forward"
        ) from None
    except requests.exceptions.ConnectionError as exc:
        raise ShrinkError(
            f"cannot reach KFP at {host} ({_reason(exc)}); check the address, or start a port-forward: "
            "kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80"
        ) from None
    if resp.status_code in (401, 403):
        raise ShrinkError(_auth_message(host, resp.status_code, token))
    if 300 <= resp.status_code < 400:
        where = resp.headers.get("Location", "a login page")
        raise ShrinkError(
            f"KFP at {host} redirected to {where} (HTTP {resp.status_code}): it wants a login; "
            "pass a token (--token) or set KF_PIPELINES_SA_TOKEN_PATH"
        )
    if resp.status_code == 404:
        raise ShrinkError(f"no KFP API at {url} (HTTP 404): is {host} the Kubeflow Pipelines address?")
    if resp.status_code >= 400:
        raise ShrinkError(f"KFP at {host} is not healthy: HTTP {resp.status_code} {resp.text[:200]}")
    try:
        return resp.json()
    except ValueError:
        raise ShrinkError(f"{url} did not answer with KFP's JSON: is {host} the Kubeflow Pipelines address?") from None


def _reason(exc: Exception) -> str:
    text = str(exc)
    markers = (
        "Connection refused",
        "Name or service not known",
        "No route to host",
        "Network is unreachable",
        "nodename nor servname",
        "Temporary failure in name resolution",
    )
    for marker in markers:
        if marker in text:
            return marker.lower()
    return _first_line(exc)[:200]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _auth_message(host: str | None, status: int, token: str | None) -> str:
    had = "the token was rejected: it is expired, revoked or lacks access" if token else "no token was sent"
    return (
        f"KFP at {host or '(kube config)'} refused the request (HTTP {status}): {had}; get a fresh "
        "token (e.g. `kubectl create token <service-account> -n <namespace> --audience "
        "pipelines.kubeflow.org`) and pass it with --token, or set KF_PIPELINES_SA_TOKEN_PATH"
    )


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """kfp.Client prints links and a FutureWarning on every call; we log our own line instead."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def explain(exc: Exception, host: str | None, what: str, has_token: bool = True) -> ShrinkError:
    """One line for anything the KFP client raises."""
    import urllib3
    from kfp_server_api.exceptions import ApiException

    if isinstance(exc, ShrinkError):
        return exc
    if isinstance(exc, ApiException):
        if exc.status in (401, 403):
            return ShrinkError(f"{what}: " + _auth_message(host, exc.status, "token" if has_token else None))
        detail = exc.body or ""
        try:
            body = json.loads(detail)
            detail = body.get("message") or body.get("error") or detail
        except (TypeError, ValueError):
            pass
        if not exc.status:
            return ShrinkError(f"{what}: cannot reach KFP at {host}: {exc.reason}")
        return ShrinkError(f"{what}: KFP at {host} answered HTTP {exc.status} {exc.reason}: {str(detail)[:300]}")
    if isinstance(exc, urllib3.exceptions.HTTPError | TimeoutError | ConnectionError):
        return ShrinkError(f"{what}: cannot reach KFP at {host}: {_reason(exc)}")
    if isinstance(exc, ValueError):  # kfp's own "multiple pipelines with the name ..." and the like
        return ShrinkError(f"{what}: {exc}")
    raise exc


class Session:
    """A connected kfp.Client plus the host for messages and links; every call maps errors to ShrinkError."""

    def __init__(self, client: Any, host: str | None, ui: str, has_token: bool = True):
        self.client = client
        self.host = host
        self.ui = ui.rstrip("/")
        self.has_token = has_token

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` without kfp's prints; failures become one ShrinkError naming ``what``."""
        try:
            with quiet():
                return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - _explain re-raises what it does not recognise
            raise explain(exc, self.host, what, self.has_token) from None

    def link(self, kind: str, ident: str) -> str:
        """The KFP UI page of a run (``runs``) or recurring run (``recurringrun``)."""
        return f"{self.ui}/#/{kind}/details/{ident}"


def connect(
    host: str | None = None,
    token: str | None = None,
    namespace: str | None = None,
    timeout_s: float = 10.0,
    ui_host: str | None = None,
) -> Session:
    """Connect to the KFP API, failing within ``timeout_s`` with a clear message when it cannot."""
    import kfp

    host = host or os.environ.get("KF_PIPELINES_ENDPOINT") or None
    credentials = None
    token_path = None if token else _token_file()
    if token_path:
        from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

        credentials = ServiceAccountTokenVolumeCredentials(token_path)
    if host:
        probe(host, token or (_read_token(token_path) if token_path else None), timeout_s)
    elif not (os.environ.get("KUBERNETES_SERVICE_HOST") or _kube_config_exists()):
        raise ShrinkError(
            "no KFP host: pass --host (e.g. http://localhost:8080 with a port-forward) or set "
            "KF_PIPELINES_ENDPOINT; without one, kfp needs to run in the cluster or a kube config"
        )
    try:
        with quiet():
            client = kfp.Client(
                host=host,
                existing_token=token,
                credentials=credentials,
                namespace=namespace or "kubeflow",
                ui_host=ui_host,
            )
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, host, "connect", bool(token or token_path)) from None
    ui = os.environ.get("KF_PIPELINES_UI_ENDPOINT") or ui_host or host or "/pipeline"
    return Session(client, host, ui, has_token=bool(token or token_path))


def _kube_config_exists() -> bool:
    paths = os.environ.get("KUBECONFIG", "").split(os.pathsep) + [os.path.expanduser("~/.kube/config")]
    return any(p and os.path.isfile(p) for p in paths)
