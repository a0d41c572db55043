"""The one place that talks to the Hugging Face hub.

Hub ids (``hf:org/name``) are a real code path for users with network, but
this project must never hang on a machine without one: we probe the endpoint
once with a short timeout and fail with a clear message instead of letting
the hub clients retry for minutes.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from shrink.errors import ShrinkError, TransientError

PREFIX = "hf:"


def is_hub_id(spec: str) -> bool:
    """Whether a reference names the Hugging Face hub (``hf:<id>``)."""
    return spec.startswith(PREFIX)


def hub_id(spec: str) -> str:
    """The hub id without the ``hf:`` prefix."""
    return spec[len(PREFIX) :].strip("/")


def dataset_ref(spec: str) -> tuple[str, str | None]:
    """(dataset name, config or None) that ``datasets.load_dataset`` is given for ``hf:<id>[/<config>]``.

    Two parts name a canonical dataset and its config (``hf:clinc_oos/plus``); three, an
    ``org/name`` repository and its config.
    """
    parts = hub_id(spec).split("/")
    if len(parts) > 2:
        return "/".join(parts[:2]), "/".join(parts[2:])
    if len(parts) == 2:
        return parts[0], parts[1]
    return parts[0], None


def ensure_reachable(spec: str, timeout: float = 3.0) -> None:
    """Raise a one-line ShrinkError when the hub cannot be reached, before any client retries."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise ShrinkError(f"{spec}: HF_HUB_OFFLINE is set; use a local copy (a directory or s3:// URI) instead")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    from shrink import transient

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                pass
        except OSError as exc:
            raise TransientError(
                f"{spec}: the Hugging Face hub at {endpoint} is unreachable ({exc.__class__.__name__}: {exc}); "
                "use a local copy (a directory or s3:// URI) instead"
            ) from None

    transient.retrying(probe, spec)
