"""A serving process imports what serving uses, and not the rest of what ``import kserve`` pulls in.

Memory per worker is what decides how many workers a machine holds (Roblox's
cost came from more workers per machine). ``import kserve`` costs a serving
worker about 170 MB before any model is loaded, most of it code the server
never runs:

* the package's ``__init__`` imports the Kubernetes client, KServe's own
  cluster client and its ~200 generated API models (~50 MB): those are for
  writing InferenceServices, which a server does not do;
* ``kserve.protocol.infer_type`` and ``kserve.utils`` import pandas (~45 MB,
  and pandas imports pyarrow, ~35 MB more, where it is installed) for
  DataFrame inputs and outputs; shrink's predictor takes texts and answers
  labels, and its tests pin that no DataFrame is ever made.

:func:`enter` marks the process (and the worker processes KServe spawns, which
inherit the environment) as a serving process; :func:`apply`, run by
:mod:`shrink.serving.kserve_api` before it imports KServe, then

1. imports the ``kserve`` package without running its ``__init__``: its
   submodules import normally, and the first use of a top-level name
   (``kserve.KServeClient``) runs the real ``__init__`` then, so nothing is
   lost, only deferred;
2. keeps httpx's command-line interface out (``httpx._main`` imports rich,
   pygments and click); httpx itself carries on without it, as it does where
   its CLI extras are not installed;
3. gives pandas a placeholder whose ``DataFrame`` is a class nothing is an
   instance of (KServe names it in annotations and ``isinstance`` checks);
   any other name loads the real pandas, so a library that does use it
   (transformers, for a PyTorch model) still gets it.

Only a process that serves is changed: the pipeline, the tests and
``check_servable`` run in processes that import the real packages.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types

ENV = "SHRINK_SERVING_PROCESS"


def enter() -> None:
    """Mark this process and its children as serving processes; call before KServe is imported."""
    os.environ[ENV] = "1"
    apply()


def active() -> bool:
    """Whether this is a serving process (:func:`enter` ran here or in a parent)."""
    return os.environ.get(ENV) == "1"


def apply() -> None:
    """In a serving process, defer KServe's package ``__init__`` and stand in for pandas (idempotent)."""
    if not active():
        return
    if "kserve" not in sys.modules:
        sys.modules["kserve"] = _deferred_package("kserve")
    if "pandas" not in sys.modules and (placeholder := _pandas_placeholder()) is not None:
        sys.modules["pandas"] = placeholder
    sys.modules.setdefault("httpx._main", None)  # None in sys.modules: an import of it raises ImportError


def _deferred_package(name: str) -> types.ModuleType:
    """The package ``name`` with its submodules importable and its ``__init__`` run on first use of a name."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    package = importlib.util.module_from_spec(spec)

    def __getattr__(attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        if importlib.util.find_spec(f"{name}.{attr}") is not None:  # ``from kserve import logging``
            return importlib.import_module(f"{name}.{attr}")
        del package.__getattr__  # anything else is defined by the real __init__: run it now

        spec.loader.exec_module(package)
        return getattr(package, attr)

    package.__getattr__ = __getattr__
    return package


class _NotLoaded:
    """Stands in for ``pandas.DataFrame``: a type (for annotations and ``isinstance``) that cannot be made."""

    def __new__(cls, *args, **kwargs):
        raise RuntimeError(f"pandas is not loaded in a shrink serving process ({__name__}): no DataFrames here")


def _pandas_placeholder() -> types.ModuleType | None:
    """``pandas`` as KServe's imports see it; any other use of pandas loads the real package then."""
    spec = importlib.util.find_spec("pandas")
    if spec is None:
        return None  # not installed: nothing to save
    module = types.ModuleType("pandas", "Placeholder for pandas in a shrink serving process (shrink.serving.lean).")
    module.__spec__ = spec  # find_spec("pandas") (transformers asks it) answers as for the real package
    module.DataFrame = _NotLoaded
    module.Series = _NotLoaded

    def __getattr__(attr: str):
        if attr.startswith("__") and attr != "__version__":
            raise AttributeError(attr)
        # A real user of pandas (not KServe's annotations): load the package and answer from it.
        if sys.modules.get("pandas") is module:
            del sys.modules["pandas"]
        return getattr(importlib.import_module("pandas"), attr)

    module.__getattr__ = __getattr__
    return module
