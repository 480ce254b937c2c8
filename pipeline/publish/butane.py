"""The Butane configs (variant flatcar) `publish static` writes: what a Flatcar host applies with
Ignition to install extensions, keep them updated and merge only images we signed.

A config is built as data and written with PyYAML (values are never pasted into YAML text, so
no name, URL or certificate can change its structure). It installs, for each extension, its
newest image pinned by sha256, the sysupdate transfer files and a link in /etc/extensions;
the OpenPGP keyring sysupdate verifies SHA256SUMS.gpg with; every trusted verity certificate
in /etc/verity.d/; and a drop-in that makes every merge of systemd-sysext.service (at boot,
and the reload that follows an update) require a verity signature with IMAGE_POLICY.
`signed+absent` and never `verity+signed`: with `verity` allowed, an image whose signature
does not verify still merges as a plain verity image (kairos-io/kairos#4425).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from pipeline.core.vocab import KEYRING
from pipeline.publish import canary as canary_check
from pipeline.publish.sysupdate import EXTENSIONS_DIR, TARGET_DIR

IMAGE_POLICY = "root=signed+absent:usr=signed+absent"
VERITY_DIR = "/etc/verity.d"
KEYRINGS = ("/etc/systemd/import-pubring.gpg", "/etc/systemd/import-pubring.pgp")
POLICY_DROPIN = "10-wasm-sysexts-image-policy.conf"
NODE_LABEL = "wasm-sysexts.dev/{handler}"  # RuntimeClasses schedule onto nodes with it (deploy/)
KUBELET_DEFAULTS = "/etc/default/kubelet"  # kubeadm's kubelet drop-in reads KUBELET_EXTRA_ARGS
REFRESH = f"systemd-sysext refresh --image-policy={IMAGE_POLICY}"
# Restart containerd if it runs; `try-restart` fails on a host without the unit at all.
RESTART_CONTAINERD = (
    "{ ! systemctl -q is-active containerd.service || systemctl restart containerd.service; }"
)


@dataclass(frozen=True)
class Installed:
    """One extension a Butane config installs: its name and the image file it starts with."""

    name: str
    image: str
    sha256: str


@dataclass(frozen=True)
class Certificate:
    """A verity certificate hosts trust: its file name in /etc/verity.d/ and its PEM text."""

    file: str
    pem: str


@dataclass(frozen=True)
class Trust:
    """What the hosts verify: SHA256SUMS.gpg with the keyring (by its sha256), images with the
    certificates. No certificates: the tree was published with --allow-unsigned."""

    keyring_sha256: str
    certificates: tuple[Certificate, ...]


class _Mode(int):
    """A file mode, written in octal as people read it (0644)."""


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)  # lists indented under their key, as Butane docs

    def ignore_aliases(self, data: Any) -> bool:
        return True  # every entry written out in full: an operator edits them one by one


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None  # unit files and certificates stay readable
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _mode(dumper: yaml.SafeDumper, value: _Mode) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:int", f"0{int(value):o}")


_Dumper.add_representer(str, _text)
_Dumper.add_representer(_Mode, _mode)


def _file(path: str, contents: dict[str, Any], mode: int = 0o644) -> dict[str, Any]:
    return {"path": path, "mode": _Mode(mode), "contents": contents}


def _refresh(handlers: bool) -> str:
    """What runs after an update moved a link. The merge is systemd-sysext.service's reload,
    run by PID 1 in that unit's context: under the policy drop-in, and outside the sandbox of
    systemd-sysupdate.service, in which a refresh cannot set up the images ("Failed to read
    metadata for image ...: Operation not permitted", seen on systemd 257). containerd then
    restarts: it reads new handlers' config only when it starts."""
    command = "systemctl reload-or-restart systemd-sysext.service"
    if handlers:
        command += f" && {RESTART_CONTAINERD}"
    return command


def _policy_dropin() -> str:
    return (
        "[Service]\n"
        "# wasm-sysexts: merge only images whose dm-verity root hash signature verifies\n"
        f"# against a certificate in {VERITY_DIR}/.\n"
        "ExecStart=\n"
        f"ExecStart={REFRESH}\n"
        "ExecReload=\n"
        f"ExecReload={REFRESH}\n"
    )


def butane(
    extensions: Sequence[Installed],
    base_url: str,
    trust: Trust,
    handlers: Sequence[str] = (),
    canary: Installed | None = None,
) -> str:
    """A Butane config installing `extensions` from the tree at `base_url` and keeping them
    updated. With `handlers` (a Kubernetes node running Wasm pods) the kubelet labels the node
    with each containerd runtime handler's label and containerd restarts after an update.
    With `canary`, the trust canary and the unit that checks it on every boot (canary.py).

    Every fetched file is pinned by hash: the config is the trust root, so the keyring and the
    images are as trustworthy as the config that names them.
    """
    base = base_url.rstrip("/")
    enforcing = bool(trust.certificates)
    refresh = _refresh(bool(handlers))
    files: list[dict[str, Any]] = []
    links: list[dict[str, Any]] = []
    dropins: list[dict[str, str]] = []

    def image(ext: Installed) -> str:
        path = f"{TARGET_DIR}/{ext.name}/{ext.image}"
        source = {
            "source": f"{base}/{ext.name}/{ext.image}",
            "verification": {"hash": f"sha256-{ext.sha256}"},
        }
        files.append(_file(path, source))
        return path

    for ext in extensions:
        link = f"{EXTENSIONS_DIR}/{ext.name}.raw"
        target = image(ext)
        for suffix in ("transfer", "conf"):
            files.append(
                _file(
                    f"/etc/sysupdate.{ext.name}.d/{ext.name}.{suffix}",
                    {"source": f"{base}/sysupdate.d/{ext.name}.{suffix}"},
                )
            )
        links.append({"path": link, "target": target, "hard": False})
        moved = f"readlink -f {link} | cmp -s /run/{ext.name}.old - || {{ {refresh}; }}"
        dropins.append(
            {
                "name": f"{ext.name}.conf",
                "contents": "[Service]\n"
                f'ExecStartPre=/bin/sh -c "readlink -f {link} > /run/{ext.name}.old"\n'
                f"ExecStartPre=/usr/lib/systemd/systemd-sysupdate -C {ext.name} update\n"
                f'ExecStartPost=/bin/sh -c "{moved}"\n',
            }
        )
    if handlers:
        labels = ",".join(f"{NODE_LABEL.format(handler=h)}=true" for h in handlers)
        kubelet = {"inline": f"KUBELET_EXTRA_ARGS=--node-labels={labels}\n"}
        files.append({**_file(KUBELET_DEFAULTS, kubelet), "overwrite": True})
    keyring = {
        "source": f"{base}/{KEYRING}",
        "verification": {"hash": f"sha256-{trust.keyring_sha256}"},
    }
    files += [_file(ring, keyring) for ring in KEYRINGS]
    files += [_file(f"{VERITY_DIR}/{c.file}", {"inline": c.pem}) for c in trust.certificates]
    # sysupdate complains when /etc/sysupdate.d has no definitions at all.
    match = "Type=regular-file\nPath=/\nMatchPattern=invalid@v.raw\n"
    noop = {"inline": f"[Source]\n{match}[Target]\n{match}"}
    files.append(_file("/etc/sysupdate.d/noop.conf", noop))
    units: list[dict[str, Any]] = []
    if enforcing:
        policy = {"name": POLICY_DROPIN, "contents": _policy_dropin()}
        units.append({"name": "systemd-sysext.service", "enabled": True, "dropins": [policy]})
    units += [
        {"name": "systemd-sysupdate.timer", "enabled": True},
        {"name": "systemd-sysupdate.service", "dropins": dropins},
    ]
    if canary:
        check = canary_check.check_script(image(canary))
        files.append(_file(canary_check.CHECK, {"inline": check}, 0o755))
        units.append(
            {"name": f"{canary_check.NAME}.service", "enabled": True, "contents": canary_check.UNIT}
        )
    config = {
        "variant": "flatcar",
        "version": "1.0.0",
        "storage": {"files": files, "links": links},
        "systemd": {"units": units},
    }
    header = _header([e.name for e in extensions], base, enforcing, bool(handlers))
    if canary:
        header += [
            f"Trust canary: {canary.image} is signed by a throwaway key;",
            f"{canary_check.NAME}.service offers it to this host's merge after every boot and",
            "fails, naming it, if it was merged.",
        ]
    body = yaml.dump(config, Dumper=_Dumper, sort_keys=False, width=1 << 16)
    return "".join(f"# {line}\n" for line in header) + body


def _header(names: list[str], base: str, enforcing: bool, handlers: bool) -> list[str]:
    them = "them" if len(names) > 1 else "it"
    lines = [
        f"Install {', '.join(names)} from {base}",
        f"and let systemd-sysupdate keep {them} up to date (Verify=yes: SHA256SUMS.gpg must",
        "verify against the keyring installed below).",
    ]
    if enforcing:
        lines += [
            "Every merge on this host requires a dm-verity signature by a certificate in",
            f"{VERITY_DIR}/ (--image-policy={IMAGE_POLICY}): an unsigned image,",
            "or one signed by another key, is refused (docs/publishing.md: when an image is",
            "refused).",
        ]
    else:
        lines += [
            "WARNING: published with --allow-unsigned. These images carry no verity signature;",
            "this config installs no certificate and no image policy, so this host merges any",
            "image in /etc/extensions/, signed or not.",
        ]
    if handlers:
        lines += [
            "The node gets the labels the RuntimeClasses select (deploy/kubernetes/); with",
            "kubeadm's JoinConfiguration, nodeRegistration.kubeletExtraArgs node-labels does",
            "the same.",
        ]
    return lines
