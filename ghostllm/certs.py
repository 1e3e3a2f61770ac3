"""Development TLS material for ``ghostllm certs``.

Why this exists: HTTP/2 (and therefore gRPC and the OpenAI-compatible API over h2)
is negotiated through TLS ALPN in every browser and most clients, so a gateway
that is only reachable over plaintext cannot be exercised the way it runs in
production.  Self-signed leaf certificates push users into ``verify=False``,
which then leaks into real code.  Instead we mint a small local CA once, which
the user trusts explicitly (``ca.pem``), and a short-lived server certificate
signed by it.

Design choices:

* Only the ``cryptography`` library is used, so there is no dependency on an
  ``openssl`` binary or its version-specific CLI flags.
* EC P-256 keys: fast to generate, universally supported by TLS stacks.
* Re-running is safe: an existing CA is *never* replaced unless ``force=True``,
  because the user may already have added it to a trust store.  The server
  certificate is cheap and is re-issued whenever it is missing, unreadable, not
  signed by the current CA, does not cover the requested hosts, or expires
  within 30 days.
* The extensions follow what strict verifiers demand (OpenSSL's
  ``X509_V_FLAG_X509_STRICT``, which Python 3.13 enables by default; Apple's
  825-day limit for TLS server certificates): SKI/AKI, critical
  basicConstraints and keyUsage on the CA, serverAuth EKU and SANs on the leaf.
* Private keys are written atomically with mode 0600 into a 0700 directory.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CA_COMMON_NAME", "CertError", "CertPaths", "make_dev_certs"]

CA_COMMON_NAME = "GhostLLM Development CA"
CA_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
SERVER_FILE = "server.pem"
SERVER_KEY_FILE = "server-key.pem"

#: Lifetime of the local CA.  Long, because re-trusting a CA is a manual step.
CA_DAYS = 3650
#: Server certificates expiring within this window are re-issued.
RENEW_BEFORE = dt.timedelta(days=30)
#: Backdating tolerates small clock skew between the host and containers/VMs.
BACKDATE = dt.timedelta(minutes=1)

_DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")

_GeneralName = x509.DNSName | x509.IPAddress


class CertError(Exception):
    """The existing TLS material cannot be reused safely (use ``force=True``)."""


@dataclass(frozen=True)
class CertPaths:
    """Locations of the generated PEM files."""

    ca_cert: Path
    cert: Path
    key: Path


def make_dev_certs(
    out_dir: Path,
    *,
    hosts: Sequence[str] = _DEFAULT_HOSTS,
    days: int = 825,
    force: bool = False,
) -> CertPaths:
    """Create (or reuse) a development CA and a server certificate in ``out_dir``.

    ``hosts`` become the server certificate's subjectAltNames: entries that parse
    as IP addresses become iPAddress SANs, everything else a dNSName.  ``days``
    is the server certificate's validity.  With ``force=False`` an existing CA is
    reused (and the server certificate only re-issued when needed); with
    ``force=True`` everything is regenerated.

    Raises ``ValueError`` for bad arguments and ``CertError`` when ``ca.pem``
    exists but its key is missing, unreadable or does not match.
    """
    if isinstance(hosts, str):
        raise ValueError("hosts must be a sequence of host names, not a single string")
    if days < 1:
        raise ValueError(f"days must be positive, got {days}")
    sans = _parse_hosts(hosts)

    out_dir = Path(out_dir)
    _ensure_private_dir(out_dir)
    paths = CertPaths(
        ca_cert=out_dir / CA_FILE,
        cert=out_dir / SERVER_FILE,
        key=out_dir / SERVER_KEY_FILE,
    )
    ca_key_path = out_dir / CA_KEY_FILE
    now = dt.datetime.now(dt.UTC)

    loaded = None if force else _load_ca(paths.ca_cert, ca_key_path, now)
    if loaded is None:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _build_ca(ca_key, now)
        # Key first: a crash in between leaves an orphan key, which is simply
        # overwritten next time because no ca.pem exists that anyone could trust.
        _write_atomic(ca_key_path, _key_pem(ca_key), 0o600)
        _write_atomic(paths.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
        reuse_server = False
    else:
        ca_cert, ca_key = loaded
        reuse_server = _server_is_reusable(paths, ca_cert, sans, now)

    if not reuse_server:
        server_key = ec.generate_private_key(ec.SECP256R1())
        server_cert = _build_server(server_key, ca_cert, ca_key, sans, days, now)
        # A crash between these two writes leaves a key/cert mismatch, which
        # _server_is_reusable detects, so the next run re-issues.
        _write_atomic(paths.key, _key_pem(server_key), 0o600)
        _write_atomic(paths.cert, server_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return paths


# --------------------------------------------------------------------------- helpers


def _parse_hosts(hosts: Sequence[str]) -> list[_GeneralName]:
    sans: list[_GeneralName] = []
    for raw in hosts:
        host = raw.strip()
        if host.startswith("[") and host.endswith("]"):  # "[::1]" as written in URLs
            host = host[1:-1]
        if not host:
            raise ValueError(f"empty host name in {list(hosts)!r}")
        name: _GeneralName
        try:
            name = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            try:
                host.encode("ascii")
            except UnicodeEncodeError:
                raise ValueError(f"host {raw!r}: use the IDNA (xn--) form for non-ASCII names") from None
            name = x509.DNSName(host.lower())
        if name not in sans:
            sans.append(name)
    if not sans:
        raise ValueError("at least one host is required")
    return sans


def _ensure_private_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        if not out_dir.is_dir():
            raise CertError(f"{out_dir} exists and is not a directory") from None
        return
    os.chmod(out_dir, 0o700)  # mkdir's mode is filtered through the umask


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write via a temp file + rename so readers never see a partial PEM.

    The temp file is created 0600 by ``mkstemp``, so a private key is never
    world-readable, even briefly.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("not an EC private key")
    return key


def _same_public_key(key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key.public_key().public_bytes(*fmt) == cert.public_key().public_bytes(*fmt)


def _load_ca(
    cert_path: Path, key_path: Path, now: dt.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """Return the existing CA, or ``None`` if there is none to preserve."""
    if not cert_path.exists():
        return None
    hint = "rerun with force=True (--force) to create a new CA, then re-trust it"
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError as e:
        raise CertError(f"{cert_path} is not a readable PEM certificate ({e}); {hint}") from e
    try:
        key = _load_key(key_path)
    except FileNotFoundError:
        raise CertError(f"{cert_path} exists but {key_path} is missing; {hint}") from None
    except (ValueError, TypeError) as e:
        raise CertError(f"cannot load CA key {key_path} ({e}); {hint}") from e
    if not _same_public_key(key, cert):
        raise CertError(f"{key_path} does not match {cert_path}; {hint}")
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        # An expired (or nearly expired) CA protects nothing; replacing it is the
        # only useful action and cannot break a trust that still works.
        return None
    return cert, key


def _server_is_reusable(
    paths: CertPaths, ca_cert: x509.Certificate, sans: list[_GeneralName], now: dt.datetime
) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        key = _load_key(paths.key)
        cert.verify_directly_issued_by(ca_cert)
        have = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    return (
        _same_public_key(key, cert)
        and cert.not_valid_before_utc <= now
        and cert.not_valid_after_utc - now >= RENEW_BEFORE
        and all(name in have for name in sans)
    )


def _ski(key: ec.EllipticCurvePrivateKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(key.public_key())


def _build_ca(key: ec.EllipticCurvePrivateKey, now: dt.datetime) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "GhostLLM"),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        # path_length=0: this CA can sign leaves only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(_ski(key), critical=False)
        .sign(key, hashes.SHA256())
    )


def _build_server(
    key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    sans: list[_GeneralName],
    days: int,
    now: dt.datetime,
) -> x509.Certificate:
    # CN is informational only (verifiers use the SANs); keep it within 64 chars.
    first = sans[0]
    cn = first.value if isinstance(first, x509.DNSName) else str(first.value)
    # Never outlive the issuing CA: chains with such leaves fail verification.
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    try:
        ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn[:64])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_ski(key), critical=False)
        .add_extension(aki, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
