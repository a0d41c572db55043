"""The parts of the KServe SDK the server uses, imported with an empty command line.

``import kserve`` parses ``sys.argv`` for KServe's own flags: ``shrink serve
--model ...`` would set KServe's ``--model_name`` (argparse accepts
abbreviations), and a flag it cannot parse would make it exit. Every shrink
module imports KServe through this one, which hides the command line for that
moment, and turns a missing package into one line that says how to install it.
"""

from __future__ import annotations

import sys

from shrink.errors import ShrinkError

_argv = sys.argv
sys.argv = _argv[:1]
try:
    from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
    from kserve import logging as kserve_logging
    from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady, ServerNotReady
    from kserve.model_server import app
    from kserve.protocol.dataplane import DataPlane
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
    "ServerNotReady",
    "app",
    "kserve_logging",
]
