"""Every file the CLI and the library read or write by name, through one guarded reader and writer.

Why one module: the operating system's errors (no such file, a folder where a file
belongs, no permission, a missing parent folder, bytes that are not UTF-8) are expected
input errors, not bugs. Raised bare they become tracebacks; here each becomes one
``ShrinkError`` naming the path and what is wrong, worded the same wherever it happens.

Text is UTF-8; a leading byte-order mark (Excel writes one) is accepted and dropped.
JSON objects refuse duplicate keys, which ``json.loads`` would otherwise resolve
silently in favour of the last one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from shrink.errors import ShrinkError

T = TypeVar("T")
BOM = "\ufeff"


def describe_os_error(path: str | Path, exc: OSError, doing: str = "read") -> ShrinkError:
    """One line for an ``OSError`` on ``path``: what is wrong in words, not an errno."""
    path = Path(path)
    if isinstance(exc, FileNotFoundError):
        parent = path.parent
        if doing == "write" and not parent.is_dir():
            return ShrinkError(f"{path}: cannot write: folder {parent} does not exist")
        return ShrinkError(f"{path}: no such file")
    if isinstance(exc, IsADirectoryError):
        return ShrinkError(f"{path}: is a folder, expected a file")
    if isinstance(exc, NotADirectoryError):
        return ShrinkError(f"{path}: a part of the path is a file, not a folder")
    if isinstance(exc, PermissionError):
        return ShrinkError(f"{path}: permission denied (cannot {doing} it)")
    if exc.errno == errno.ENOSPC:
        return ShrinkError(f"{path}: no space left on the device")
    return ShrinkError(f"{path}: cannot {doing} it: {exc.strerror or exc}")


@contextlib.contextmanager
def guarded(path: str | Path, doing: str = "read") -> Iterator[None]:
    """Turn OS errors inside the block into a ``ShrinkError`` naming ``path``.

    For third-party calls that open a file themselves (``datasets.load_from_disk``,
    ``yaml`` over an open handle): the path is the one the user gave.
    """
    try:
        yield
    except OSError as exc:
        raise describe_os_error(path, exc, doing) from None


def read_bytes(path: str | Path) -> bytes:
    """The bytes of a file; a missing, unreadable or folder path is a one-line error."""
    with guarded(path):
        return Path(path).read_bytes()


def read_text(path: str | Path, what: str = "text") -> str:
    """A UTF-8 text file (a leading byte-order mark dropped); the offending byte named when it is not UTF-8."""
    raw = read_bytes(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ShrinkError(
            f"{path}: not UTF-8 {what} (byte 0x{raw[exc.start]:02x} at line {line}); save it as UTF-8"
        ) from None
    return text.removeprefix(BOM)


def _refuse_duplicates(path: str | Path) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise ShrinkError(f"{path}: duplicate key {key!r} in a JSON object (only one may be given)")
            seen[key] = value
        return seen

    return hook


def parse_json(text: str, where: str | Path, what: str = "JSON") -> Any:
    """``json.loads`` that refuses duplicate keys and names the line and column of a syntax error."""
    try:
        return json.loads(text, object_pairs_hook=_refuse_duplicates(where))
    except json.JSONDecodeError as exc:
        raise ShrinkError(f"{where}: not valid {what} (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None


def read_json(path: str | Path, what: str = "JSON") -> Any:
    """A UTF-8 JSON file, strictly: duplicate keys and syntax errors named with the file."""
    return parse_json(read_text(path, what), path, what)


def check_writable(path: str | Path) -> Path:
    """Fail before any work when ``path`` cannot be written as a file (missing folder, a folder, read-only)."""
    path = Path(path)
    if path.is_dir():
        raise ShrinkError(f"{path}: is a folder, expected a file name to write")
    parent = path.parent
    if not parent.exists():
        raise ShrinkError(f"{path}: cannot write: folder {parent} does not exist")
    if not parent.is_dir():
        raise ShrinkError(f"{path}: cannot write: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ShrinkError(f"{path}: permission denied (cannot write it)")
    return path


def write_bytes(path: str | Path, data: bytes, atomic: bool = True) -> Path:
    """Write a file, by default atomically (a temporary sibling renamed over it: readers see old or new).

    The parent folder must exist: creating folders the user did not ask for hides typos.
    """
    path = check_writable(path)
    if not atomic:
        with guarded(path, "write"):
            path.write_bytes(data)
        return path
    with guarded(path, "write"):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            if path.exists():
                os.chmod(tmp, path.stat().st_mode & 0o7777)
            else:
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    return path


def write_text(path: str | Path, text: str, atomic: bool = True) -> Path:
    """Write UTF-8 text (see :func:`write_bytes`)."""
    return write_bytes(path, text.encode("utf-8"), atomic=atomic)


def write_json(path: str | Path, obj: Any, atomic: bool = True) -> Path:
    """Write an object as indented JSON (see :func:`write_bytes`)."""
    return write_text(path, json.dumps(obj, indent=2, default=str) + "\n", atomic=atomic)


def loading(path: str | Path, what: str, call: Callable[[], T], errors: tuple[type[BaseException], ...]) -> T:
    """Run a third-party loader; its own error types (and OS errors) become one line naming ``path``.

    Args:
        path: The file or folder the loader reads: what the message names.
        what: What the file should be, e.g. ``"safetensors weights"``.
        call: The loader, without arguments.
        errors: The loader's exception types that mean "bad or unreadable input".
    """
    try:
        return call()
    except ShrinkError:
        raise
    except OSError as exc:
        raise describe_os_error(path, exc) from None
    except errors as exc:
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise ShrinkError(f"{path}: cannot load {what}: {first[:300]}") from None


def parse_yaml(text: str, where: str | Path, what: str = "YAML") -> Any:
    """``yaml.safe_load`` that refuses duplicate keys and gives its error on one line, with the line number."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """SafeLoader whose mappings refuse a key given twice (PyYAML keeps the last one silently)."""

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key in seen:
                raise ShrinkError(
                    f"{where}:{key_node.start_mark.line + 1}: duplicate key {key!r} (only one may be given)"
                )
            seen[key] = loader.construct_object(value_node, deep=True)
        return seen

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        # The same shape as a JSON error: "<file>: not valid <what>: <problem> (line L, column C)".
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ShrinkError(f"{where}: not valid {what}: {problem}{at}") from None


def read_yaml(path: str | Path, what: str = "YAML") -> Any:
    """A UTF-8 YAML file, strictly (see :func:`parse_yaml`); the reader for configs and SLO files."""
    return parse_yaml(read_text(path, what), path, what)
