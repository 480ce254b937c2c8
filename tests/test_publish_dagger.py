"""The Dagger publishing functions, checked offline: never cached, documented signatures,
and the exact CLI each one runs (secrets mounted as files, never in args or env)."""

from __future__ import annotations

import dagger
from dagger import dag
from support.daggerq import execs, functions, instance, selections

from pipeline.dagger_module import PUBLISH_PACKAGES, SECRETS


def test_publish_functions_are_never_cached_and_typed() -> None:
    funcs = functions()
    static, oci = funcs["publish_static"], funcs["publish_oci"]
    assert static.cache_policy == "never" and oci.cache_policy == "never"
    assert static.return_type is dagger.Directory
    assert list(static.parameters)[:3] == ["images", "base_url", "existing"]
    assert static.parameters["existing"].is_nullable
    assert oci.return_type is str
    assert list(oci.parameters)[:4] == ["images", "repository", "username", "password"]
    assert oci.parameters["password"].is_nullable  # anonymous pushes to open registries


def test_publish_static_merges_into_the_existing_tree_and_returns_plain_files() -> None:
    ctr = instance()._publish_static(dag.directory(), "https://ext.example.org",
                                     dag.directory(), dag.set_secret("k", "x"), None)
    chain = selections(ctr)
    assert [a["path"] for n, a in chain if n == "withDirectory"] == ["/src", "/images",
                                                                     "/site/tree"]
    assert [a["path"] for n, a in chain if n == "withMountedSecret"] == [f"{SECRETS}/gpg-key"]
    assert execs(ctr)[-2:] == [
        ["wasm-sysexts", "publish", "static", "/images", "--dest", "/site/tree", "--base-url",
         "https://ext.example.org", "--gpg-key", f"{SECRETS}/gpg-key"],
        ["cp", "-a", "/site/tree/.", "/out"]]
    assert set(PUBLISH_PACKAGES) <= set(execs(ctr)[1])
    out = instance().publish_static(dag.directory(), "https://ext.example.org")
    assert selections(out)[-1] == ("directory", {"path": "/out"})
    assert "/site/tree" not in [a.get("path") for n, a in selections(out)
                                if n == "withDirectory"]


def test_publish_oci_passes_the_password_as_a_secret_file() -> None:
    ctr = instance()._publish_oci(dag.directory(), "ghcr.io/acme/sysexts", "bot",
                                  dag.set_secret("pw", "hunter2"), tag_latest=True)
    chain = selections(ctr)
    assert [a["path"] for n, a in chain if n == "withMountedSecret"] == [
        f"{SECRETS}/registry-password"]
    assert execs(ctr)[-1] == ["wasm-sysexts", "publish", "oci", "/images", "--repository",
                              "ghcr.io/acme/sysexts", "--username", "bot", "--password-file",
                              f"{SECRETS}/registry-password", "--tag-latest"]
    assert not [n for n, _ in chain if n == "withSecretVariable"]
