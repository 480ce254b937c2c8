"""What a boot with containerd shim images needs besides the images themselves, for their pods
through CRI: crictl and, in the reference VM, Flatcar's containerd, both sysexts built here
from pinned source (recipes in pipeline/vm/tools/, cached like any build), merged next to the
images under test; the pod sandbox image and the hello image; the guest's CRI steps."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from pipeline.build.fetch import Fetcher
from pipeline.build.orchestrate import Options, build_one
from pipeline.core import log
from pipeline.core.errors import PipelineError
from pipeline.core.fs import link_or_copy
from pipeline.core.resources import vm_tools_dir
from pipeline.core.vocab import Arch
from pipeline.recipe.load import find
from pipeline.recipe.model import BuildFrom
from pipeline.smoke.payloads import hello_oci_tar, pause_oci_tar

CRICTL = "cri-tools"
CONTAINERD = "containerd-flatcar"  # Flatcar ships its own; the reference VM merges this one
_log = log.get("smoke")


def support_images(fetcher: Fetcher, arch: Arch, flatcar: bool) -> dict[str, Path]:
    """Extension name -> image of the tools a CRI boot of `arch` merges."""
    names = [CRICTL] if flatcar else [CONTAINERD, CRICTL]
    opts = Options(out_dir=fetcher.cache_dir / "vm-tools", build_from=BuildFrom.SOURCE)
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    images = {}
    for name in names:
        recipe = find(vm_tools_dir(), name)
        result = build_one(recipe, recipe.version, arch, fetcher, opts)
        if result.image is None:
            raise PipelineError(f"{recipe.path}: no {arch} image: {result.error}")
        images[name] = opts.out_dir / result.image
    return images


def write_payload(payload: Path, arch: Arch, hello: bytes, support: dict[str, Path]) -> None:
    """The CRI steps' files on the payload disk: support/<name>.raw (guest.sh merges them with
    the images), the pause and hello OCI images, cri.sh."""
    (payload / "support").mkdir()
    for name, image in support.items():
        link_or_copy(image, payload / "support" / f"{name}.raw")
    (payload / "hello-oci.tar").write_bytes(hello_oci_tar(hello, arch))
    (payload / "pause-oci.tar").write_bytes(pause_oci_tar(arch))
    script = importlib.resources.files("pipeline.smoke").joinpath("cri.sh")
    (payload / "cri.sh").write_text(script.read_text("utf-8"))
