"""Signing keys: `wasm-sysexts keys generate`, and reading private keys from files or env vars.

Two key pairs: an OpenPGP Ed25519 key that signs SHA256SUMS (what systemd-sysupdate checks)
and an RSA-3072 X.509 key + self-signed certificate that signs dm-verity root hashes in DDIs
(what the kernel keyring or /etc/verity.d trusts). RSA because the kernel verifies RSA PKCS#7
everywhere (ECDSA needs newer kernels) and because RSA PKCS#1 v1.5 signatures are
deterministic, which keeps signed DDIs byte-identical across rebuilds.
"""

from __future__ import annotations

import argparse
import datetime
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from pipeline import openpgp
from pipeline.errors import PipelineError

GPG_SECRET = "gpg-signing.key"  # armored OpenPGP secret key
GPG_PUBRING = "import-pubring.gpg"  # binary keyring: /etc/systemd/import-pubring.{gpg,pgp}
VERITY_KEY = "verity.key"  # PEM PKCS#8 private key
VERITY_CERT = "verity.crt"  # PEM certificate: /etc/verity.d/<name>.crt or the kernel keyring
DEFAULT_NAME = "wasm-sysexts image signing"
CERT_YEARS = 10


def read_secret(spec: str, option: str) -> bytes:
    """A private key (or passphrase) from `env:VAR` or a file path. Errors never quote it."""
    if spec.startswith("env:"):
        var = spec[4:]
        value = os.environ.get(var)
        if not value:
            raise PipelineError(f"{option} {spec}: environment variable {var} is not set")
        return value.encode()
    try:
        return Path(spec).read_bytes()
    except OSError as err:
        raise PipelineError(f"{option} {spec}: cannot read: {err.strerror}") from None


def cert_fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def load_cert(path: Path, option: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as err:
        raise PipelineError(f"{option} {path}: cannot read: {err.strerror}") from None
    except ValueError:
        raise PipelineError(f"{option} {path}: not a PEM X.509 certificate") from None


def load_verity_key(spec: str, cert: x509.Certificate) -> bytes:
    """The PEM private key from `spec`, checked to belong to `cert` (so a mix-up fails here,
    not on the hosts)."""
    pem = read_secret(spec, "--verity-key")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise PipelineError(f"--verity-key {spec}: not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise PipelineError(f"--verity-key {spec}: not an RSA key (the kernel needs RSA)")
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, pub) != \
            cert.public_key().public_bytes(serialization.Encoding.DER, pub):
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
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=365 * CERT_YEARS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                     False), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return pem_key, cert.public_bytes(serialization.Encoding.PEM), cert


def _publish(out: Path, files: dict[str, tuple[bytes, int]]) -> None:
    """Write every file or none; never replace an existing one (a lost key is not undoable)."""
    out.mkdir(parents=True, exist_ok=True)
    temps: list[Path] = []
    linked: list[Path] = []
    try:
        for name, (data, mode) in files.items():
            tmp = out / f".{name}.tmp-{os.getpid()}"
            temps.append(tmp)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)  # regardless of umask
        for tmp, name in zip(temps, files, strict=True):
            os.link(tmp, out / name)  # fails if the name appeared meanwhile
            linked.append(out / name)
    except FileExistsError as err:
        for path in linked:
            path.unlink()
        raise PipelineError(f"{err.filename2 or err.filename}: already exists; refusing to "
                            "overwrite keys") from None
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


def generate_keys(out: Path, name: str, email: str) -> dict[str, str]:
    """Make both key pairs in `out`; returns what to print (fingerprints and file names)."""
    for filename in (GPG_SECRET, GPG_PUBRING, VERITY_KEY, VERITY_CERT):
        if (out / filename).exists():
            raise PipelineError(f"{out / filename}: already exists; refusing to overwrite keys")
    fpr, secret, pubring = openpgp.generate(f"{name} <{email}>")
    verity_key, verity_cert, cert = make_verity_pair(name)
    _publish(out, {GPG_SECRET: (secret, 0o600), GPG_PUBRING: (pubring, 0o644),
                   VERITY_KEY: (verity_key, 0o600), VERITY_CERT: (verity_cert, 0o644)})
    return {"openpgp_fingerprint": fpr, "verity_cert_sha256": cert_fingerprint(cert),
            "gpg_secret_key": str(out / GPG_SECRET), "gpg_pubring": str(out / GPG_PUBRING),
            "verity_key": str(out / VERITY_KEY), "verity_cert": str(out / VERITY_CERT)}


def cmd_keys_generate(args: argparse.Namespace) -> int:
    info = generate_keys(args.out, args.name, args.email)
    print(f"OpenPGP signing key (Ed25519): {info['openpgp_fingerprint']}")
    print(f"  secret: {info['gpg_secret_key']} (0600; store as a CI secret, then delete)")
    print(f"  public: {info['gpg_pubring']} (hosts: /etc/systemd/import-pubring.gpg and .pgp)")
    print(f"dm-verity certificate (RSA-3072) SHA256: {info['verity_cert_sha256']}")
    print(f"  secret: {info['verity_key']} (0600; store as a CI secret, then delete)")
    print(f"  public: {info['verity_cert']} (hosts: /etc/verity.d/ or the kernel keyring)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    keys = subparsers.add_parser("keys", help="manage signing keys")
    sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    p = sub.add_parser("generate", help="make a new OpenPGP key and dm-verity key + certificate")
    p.add_argument("--out", type=Path, required=True, help="directory for the four key files")
    p.add_argument("--name", default=DEFAULT_NAME, help="key owner name (OpenPGP UID, cert CN)")
    p.add_argument("--email", default="release@wasm-sysexts.invalid",
                   help="OpenPGP UID e-mail")
    p.set_defaults(func=cmd_keys_generate)
