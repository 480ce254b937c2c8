"""Signing keys: `wasm-sysexts keys generate`, and loading the verity key and certificate.

Two key pairs: an OpenPGP Ed25519 key that signs SHA256SUMS (what systemd-sysupdate checks)
and an RSA-3072 X.509 key + self-signed certificate that signs dm-verity root hashes in DDIs
(what the kernel keyring or /etc/verity.d trusts). RSA because the kernel verifies RSA PKCS#7
everywhere (ECDSA needs newer kernels) and because RSA PKCS#1 v1.5 signatures are
deterministic, which keeps signed DDIs byte-identical across rebuilds.
"""

from __future__ import annotations

import datetime
import os
from contextlib import ExitStack
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from pipeline.core.errors import PipelineError
from pipeline.core.fs import os_problem, scratch_file
from pipeline.core.secret import SecretSpec
from pipeline.core.vocab import KEYRING
from pipeline.sign import openpgp

GPG_SECRET = "gpg-signing.key"  # armored OpenPGP secret key
GPG_PUBRING = KEYRING  # binary keyring: /etc/systemd/import-pubring.{gpg,pgp}
VERITY_KEY = "verity.key"  # PEM PKCS#8 private key
VERITY_CERT = "verity.crt"  # PEM certificate: /etc/verity.d/<name>.crt or the kernel keyring
DEFAULT_NAME = "wasm-sysexts image signing"
CERT_YEARS = 10


def cert_fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def load_cert(path: Path, option: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as err:
        raise PipelineError(f"{option} {path}: cannot read: {os_problem(err)}") from None
    except ValueError:
        raise PipelineError(f"{option} {path}: not a PEM X.509 certificate") from None


def load_verity_key(spec: SecretSpec, cert: x509.Certificate) -> bytes:
    """The PEM private key from `spec`, checked to belong to `cert` (so a mix-up fails here,
    not on the hosts)."""
    pem = spec.read()
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise PipelineError(f"--verity-key {spec}: not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise PipelineError(f"--verity-key {spec}: not an RSA key (the kernel needs RSA)")
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(
        serialization.Encoding.DER, pub
    ) != cert.public_key().public_bytes(serialization.Encoding.DER, pub):
        raise PipelineError(f"--verity-key {spec}: does not match --verity-cert")
    return pem


def make_verity_pair(name: str) -> tuple[bytes, bytes, x509.Certificate]:
    """(PEM private key, PEM self-signed certificate, certificate)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=365 * CERT_YEARS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem_key, cert.public_bytes(serialization.Encoding.PEM), cert


def _publish(out: Path, files: dict[str, tuple[bytes, int]]) -> None:
    """Write every file or none; never replace an existing one (a lost key is not undoable)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PipelineError(f"--out {out}: cannot create: {os_problem(err)}") from None
    linked: list[Path] = []
    with ExitStack() as temps:
        staged = []
        for name, (data, mode) in files.items():
            tmp, handle = temps.enter_context(scratch_file(out, name))  # created 0600
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            os.chmod(tmp, mode)  # regardless of umask
            staged.append((tmp, out / name))
        try:
            for tmp, final in staged:
                os.link(tmp, final)  # fails if the name appeared meanwhile
                linked.append(final)
        except FileExistsError as err:
            for path in linked:
                path.unlink()
            raise PipelineError(
                f"{err.filename2 or err.filename}: already exists; refusing to overwrite keys"
            ) from None


def generate_keys(out: Path, name: str, email: str) -> dict[str, str]:
    """Make both key pairs in `out`; returns what to print (fingerprints and file names)."""
    for filename in (GPG_SECRET, GPG_PUBRING, VERITY_KEY, VERITY_CERT):
        if (out / filename).exists():
            raise PipelineError(f"{out / filename}: already exists; refusing to overwrite keys")
    fpr, secret, pubring = openpgp.generate(f"{name} <{email}>")
    verity_key, verity_cert, cert = make_verity_pair(name)
    _publish(
        out,
        {
            GPG_SECRET: (secret, 0o600),
            GPG_PUBRING: (pubring, 0o644),
            VERITY_KEY: (verity_key, 0o600),
            VERITY_CERT: (verity_cert, 0o644),
        },
    )
    return {
        "openpgp_fingerprint": fpr,
        "verity_cert_sha256": cert_fingerprint(cert),
        "gpg_secret_key": str(out / GPG_SECRET),
        "gpg_pubring": str(out / GPG_PUBRING),
        "verity_key": str(out / VERITY_KEY),
        "verity_cert": str(out / VERITY_CERT),
    }
