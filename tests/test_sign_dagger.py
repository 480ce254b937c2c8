"""The Dagger sign and verify functions, checked offline: their typed signatures, the CLI they
run, and that secrets reach the container only as mounted secret files."""

from __future__ import annotations

from typing import Any

import dagger
from dagger import dag
from support.daggerq import execs, functions, instance, selections

from pipeline import dagger_module

GPG_PLAINTEXT = "-----BEGIN PGP PRIVATE KEY BLOCK----- not-a-real-gpg-key"
VERITY_PLAINTEXT = "-----BEGIN PRIVATE KEY----- not-a-real-verity-key"


def _strings(value: Any) -> list[str]:
    """Every string inside a selection argument (lists nest)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [s for item in value for s in _strings(item)]
    return []


def test_sign_and_verify_have_documented_signatures() -> None:
    funcs = functions()
    sign = funcs["sign"]
    assert sign.return_type is dagger.Directory
    assert list(sign.parameters) == ["images", "gpg_key", "verity_key", "verity_cert"]
    assert sign.parameters["gpg_key"].resolved_type is dagger.Secret
    assert not sign.parameters["gpg_key"].is_nullable
    assert sign.parameters["verity_key"].is_nullable
    assert sign.parameters["verity_cert"].is_nullable
    verify = funcs["verify"]
    assert verify.return_type is str
    assert list(verify.parameters) == ["images", "keyring", "verity_cert"]


def test_sign_mounts_secrets_as_files_only() -> None:
    gpg, verity = dag.set_secret("gpg", GPG_PLAINTEXT), dag.set_secret("vk", VERITY_PLAINTEXT)
    out = instance().sign(dag.directory(), gpg, verity, dag.directory().file("verity.crt"))
    chain = selections(out)
    mounted = {args["path"]: args["source"] for name, args in chain
               if name == "withMountedSecret"}
    assert mounted == {"/run/secrets/gpg-key": gpg, "/run/secrets/verity-key": verity}
    assert not [name for name, _ in chain if name == "withSecretVariable"]
    # No secret value or Secret object in any exec argument or environment variable.
    for name, args in chain:
        if name in ("withExec", "withEnvVariable"):
            for value in args.values():
                assert not isinstance(value, dagger.Secret)
                for text in _strings(value):
                    assert GPG_PLAINTEXT not in text and VERITY_PLAINTEXT not in text
    assert execs(out)[-1] == ["wasm-sysexts", "sign", "/out", "--gpg-key",
                              "/run/secrets/gpg-key", "--verity-key", "/run/secrets/verity-key",
                              "--verity-cert", "/keys/verity.crt"]
    assert set(dagger_module.SIGN_PACKAGES) <= set(execs(out)[1])
    assert chain[-1] == ("directory", {"path": "/out"})


def test_sign_without_verity_and_verify_commands() -> None:
    out = instance().sign(dag.directory(), dag.set_secret("gpg", GPG_PLAINTEXT))
    assert execs(out)[-1] == ["wasm-sysexts", "sign", "/out", "--gpg-key",
                              "/run/secrets/gpg-key"]
    ctr = instance()._verifier(dag.directory(), dag.directory().file("import-pubring.gpg"),
                               dag.directory().file("verity.crt"))
    assert execs(ctr)[-1] == ["wasm-sysexts", "verify", "/out", "--keyring",
                              "/keys/import-pubring.gpg", "--verity-cert", "/keys/verity.crt"]
