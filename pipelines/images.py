"""Container images of the components: one image name per step, one tag per release.

Image names come from the step catalog (``pipelines/steps.py``): the pipeline asks ``image_for``
which image a task runs, ``docker/build.sh`` asks ``python -m pipelines.images``
what to build and push, and the tests check that every component's
``base_image`` and every Dockerfile target agree with ``IMAGES``.

Tags default to the package version, never ``latest``: a compiled pipeline
must name the exact code its pods run, or a rerun of an old pipeline silently
executes new code.
"""

from __future__ import annotations

import argparse
import re
import sys

from pipelines.steps import STEPS
from shrink.config import ImagesConfig
from shrink.errors import ShrinkError

# Step (the component's folder under components/) -> image repository name, from the catalog.
IMAGES: dict[str, str] = {name: step.image for name, step in STEPS.items()}

# Images that are not pipeline steps: name -> image repository name. ``serve`` is what KServe's
# ServingRuntime ``shrink-serve`` runs (k8s/base/serving.yaml); built and tagged like the steps.
EXTRA_IMAGES: dict[str, str] = {"serve": "shrink-serve"}

# Steps whose image carries CUDA PyTorch (docker/Dockerfile's runtime-gpu stage); the rest
# carry the CPU wheel. The CPU images are what production serves with, so quantization,
# export and benchmarking run on exactly the kernels the model will meet in production.
GPU_STEPS: frozenset[str] = frozenset(name for name, step in STEPS.items() if step.gpu)

# Docker's tag grammar: https://docs.docker.com/reference/cli/docker/image/tag/
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_REGISTRY = re.compile(r"[a-z0-9]([a-z0-9._:-]*[a-z0-9])?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)*")


def target_for(step: str) -> str:
    """The ``docker build --target`` that builds ``step``'s image (``prepare_data`` -> ``prepare-data``)."""
    _check_step(step)
    return step.replace("_", "-")


def default_tag() -> str:
    """The package version as an image tag (``+`` of a PEP 440 local version is not allowed in tags)."""
    import shrink

    if shrink.__version__ == "0.0.0":
        raise ShrinkError(
            "cannot tell which image tag to use: the shrink package is not installed, so its version is "
            "unknown; install it (`make venv`) or set images.tag in the config"
        )
    return shrink.__version__.replace("+", "-")


def image_for(step: str, images_cfg: ImagesConfig) -> str:
    """The full image reference ``<registry>/<name>:<tag>`` that ``step`` runs on a cluster."""
    _check_step(step)
    tag = images_cfg.tag or default_tag()
    if tag == "latest":
        raise ShrinkError("images.tag: 'latest' is not reproducible; pin a version")
    if not _TAG.fullmatch(tag):
        raise ShrinkError(f"images.tag: {tag!r} is not a valid image tag (letters, digits, _ . -; max 128)")
    registry = images_cfg.registry.strip().rstrip("/")
    if registry and not _REGISTRY.fullmatch(registry):
        raise ShrinkError(
            f"images.registry: {images_cfg.registry!r} is not a valid registry (lowercase host[:port]/path)"
        )
    name = {**IMAGES, **EXTRA_IMAGES}[step]
    return f"{registry}/{name}:{tag}" if registry else f"{name}:{tag}"


def _check_step(step: str) -> None:
    if step not in IMAGES and step not in EXTRA_IMAGES:
        known = ", ".join(sorted(IMAGES))
        raise ShrinkError(f"no image for step {step!r} (known steps: {known}; other images: {', '.join(EXTRA_IMAGES)})")


def build_plan(images_cfg: ImagesConfig) -> list[tuple[str, str, str, str]]:
    """(step or extra image, docker target, ``cpu``|``gpu``, image reference) for every image, CPU ones first."""
    rows = [
        (step, target_for(step), "gpu" if step in GPU_STEPS else "cpu", image_for(step, images_cfg))
        for step in [*IMAGES, *EXTRA_IMAGES]
    ]
    return sorted(rows, key=lambda r: (r[2], r[0]))


def main(argv: list[str] | None = None) -> int:
    """Print the build plan as tab-separated lines for docker/build.sh."""
    from shrink.config import from_dict, load_yaml

    parser = argparse.ArgumentParser(prog="python -m pipelines.images", description=main.__doc__)
    parser.add_argument("--config", help="pipeline config whose `images` section names registry and tag")
    parser.add_argument("--registry", help="override images.registry")
    parser.add_argument("--tag", help="override images.tag (default: the package version)")
    args = parser.parse_args(argv)
    try:
        cfg = load_yaml(ImagesConfig, args.config, section="images") if args.config else ImagesConfig()
        registry = args.registry if args.registry is not None else cfg.registry
        data = {"registry": registry, "tag": args.tag or cfg.tag}
        cfg = from_dict(ImagesConfig, data, "images")
        for row in build_plan(cfg):
            print("\t".join(row))
    except ShrinkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
