"""The parts of the KServe SDK the server uses, imported with an empty command line.

Names come from KServe's submodules, not the package: a serving process
imports the package without its ``__init__`` (:mod:`shrink.serving.lean`).
``kserve.model_server`` parses ``sys.argv`` for KServe's own flags: ``shrink serve
--model ...`` would set KServe's ``--model_name`` (argparse accepts
abbreviations), and a flag it cannot parse would make it exit. Every shrink
module imports KServe through this one, which hides the command line for that
moment, and turns a missing package into one line that says how to install it.
"""

from __future__ import annotations

import sys

from shrink.errors import ShrinkError
from shrink.serving import lean

lean.apply()

_argv = sys.argv
sys.argv = _argv[:1]
try:
    import kserve.logging as kserve_logging
    from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady, ServerNotReady
    from kserve.model import Model
    from kserve.model_server import ModelServer, app
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
    from kserve.protocol.rest.server import RESTServer
    from timing_asgi import TimingMiddleware
except ImportError as exc:
    raise ShrinkError(f"serve: cannot import kserve ({exc}); install it with pip install 'shrink[serve]'") from None
finally:
    sys.argv = _argv

__all__ = [
    "DataPlane",
    "InferOutput",
    "InferRequest",
    "InferResponse",
    "InvalidInput",
    "Model",
    "ModelNotFound",
    "ModelNotReady",
    "ModelServer",
    "RESTServer",
    "ServerNotReady",
    "TimingMiddleware",
    "app",
    "kserve_logging",
]
