"""Tests for ghostllm.certs: the generated material must work with a real TLS stack."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
import stat
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from ghostllm.certs import CA_COMMON_NAME, CertError, CertPaths, make_dev_certs

TIMEOUT = 10.0


# --------------------------------------------------------------------------- TLS harness


class _TLSServer:
    """A one-thread TLS server on 127.0.0.1 that handshakes and records the ALPN result."""

    def __init__(self, paths: CertPaths) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(paths.cert, paths.key)
        self.ctx.set_alpn_protocols(["h2", "http/1.1"])
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.alpn: list[str | None] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tls-test-server", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(TIMEOUT)
                try:
                    with self.ctx.wrap_socket(conn, server_side=True) as tls:
                        self.alpn.append(tls.selected_alpn_protocol())
                        tls.recv(1)  # wait for the client to close
                except (ssl.SSLError, OSError) as e:
                    self.errors.append(e)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(TIMEOUT)
        self.sock.close()
        assert not self._thread.is_alive()


@contextmanager
def tls_server(paths: CertPaths) -> Iterator[_TLSServer]:
    server = _TLSServer(paths)
    try:
        server.start()
        yield server
    finally:
        server.close()


def handshake(
    port: int, ctx: ssl.SSLContext, server_hostname: str, alpn: Sequence[str] | None = ("h2", "http/1.1")
) -> str | None:
    """Connect, handshake, return the negotiated ALPN protocol."""
    if alpn is not None:
        ctx.set_alpn_protocols(list(alpn))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw,
        ctx.wrap_socket(raw, server_hostname=server_hostname) as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        return tls.selected_alpn_protocol()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def paths(tmp_path: Path) -> CertPaths:
    return make_dev_certs(tmp_path / "certs")


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------- real TLS


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1"])
def test_client_trusting_only_ca_verifies_and_negotiates_h2(paths: CertPaths, hostname: str) -> None:
    with tls_server(paths) as server:
        ctx = ssl.create_default_context(cafile=str(paths.ca_cert))
        assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
        assert handshake(server.port, ctx, hostname) == "h2"
    assert server.alpn == ["h2"]
    assert server.errors == []


def test_alpn_falls_back_to_http11(paths: CertPaths) -> None:
    with tls_server(paths) as server:
        ctx = ssl.create_default_context(cafile=str(paths.ca_cert))
        assert handshake(server.port, ctx, "localhost", alpn=["http/1.1"]) == "http/1.1"


def test_strict_x509_verification_passes(paths: CertPaths) -> None:
    # Python 3.13+ enables VERIFY_X509_STRICT by default; make sure we already comply.
    with tls_server(paths) as server:
        ctx = ssl.create_default_context(cafile=str(paths.ca_cert))
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT
        assert handshake(server.port, ctx, "localhost") == "h2"


def test_default_trust_store_rejects_dev_ca(paths: CertPaths) -> None:
    with tls_server(paths) as server:
        ctx = ssl.create_default_context()
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(server.port, ctx, "localhost")


def test_hostname_not_in_sans_is_rejected(paths: CertPaths) -> None:
    with tls_server(paths) as server:
        ctx = ssl.create_default_context(cafile=str(paths.ca_cert))
        with pytest.raises(ssl.SSLCertVerificationError, match="match"):
            handshake(server.port, ctx, "example.com")


# --------------------------------------------------------------------------- files and contents


def test_files_and_modes(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "certs"
    old_umask = os.umask(0o022)
    try:
        paths = make_dev_certs(out)
    finally:
        os.umask(old_umask)
    assert paths == CertPaths(ca_cert=out / "ca.pem", cert=out / "server.pem", key=out / "server-key.pem")
    assert _mode(out) == 0o700
    assert _mode(out / "ca-key.pem") == 0o600
    assert _mode(paths.key) == 0o600
    assert sorted(p.name for p in out.iterdir()) == ["ca-key.pem", "ca.pem", "server-key.pem", "server.pem"]
    for key_file in (out / "ca-key.pem", paths.key):
        pem = key_file.read_bytes()
        assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS8, unencrypted
    assert paths.cert.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")


def test_ca_extensions(paths: CertPaths) -> None:
    ca = _cert(paths.ca_cert)
    cn = ca.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    assert [a.value for a in cn] == [CA_COMMON_NAME]
    assert ca.issuer == ca.subject
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    pub = ca.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey) and pub.curve.name == "secp256r1"


def test_server_extensions_and_sans(tmp_path: Path) -> None:
    before = dt.datetime.now(dt.UTC)
    paths = make_dev_certs(tmp_path, hosts=["localhost", "gw.test", "127.0.0.1", "::1"], days=100)
    ca = _cert(paths.ca_cert)
    leaf = _cert(paths.cert)
    leaf.verify_directly_issued_by(ca)

    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "gw.test"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert not bc.ca
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest

    nvb = leaf.not_valid_before_utc
    assert before - dt.timedelta(seconds=90) <= nvb <= before - dt.timedelta(seconds=50)
    assert abs((leaf.not_valid_after_utc - before) - dt.timedelta(days=100)) < dt.timedelta(minutes=1)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make_dev_certs(tmp_path, hosts=[])
    with pytest.raises(ValueError):
        make_dev_certs(tmp_path, hosts="localhost")
    with pytest.raises(ValueError):
        make_dev_certs(tmp_path, days=0)


# --------------------------------------------------------------------------- reuse / force


def test_second_call_reuses_everything(tmp_path: Path) -> None:
    first = make_dev_certs(tmp_path)
    ca_bytes = first.ca_cert.read_bytes()
    ca_key_bytes = (tmp_path / "ca-key.pem").read_bytes()
    server_bytes = first.cert.read_bytes()
    second = make_dev_certs(tmp_path)
    assert second == first
    assert second.ca_cert.read_bytes() == ca_bytes
    assert (tmp_path / "ca-key.pem").read_bytes() == ca_key_bytes
    assert second.cert.read_bytes() == server_bytes


def test_expiring_server_cert_is_reissued_under_same_ca(tmp_path: Path) -> None:
    first = make_dev_certs(tmp_path, days=10)  # inside the 30-day renewal window
    ca_bytes = first.ca_cert.read_bytes()
    old_leaf = first.cert.read_bytes()
    second = make_dev_certs(tmp_path)
    assert second.ca_cert.read_bytes() == ca_bytes
    assert second.cert.read_bytes() != old_leaf
    _cert(second.cert).verify_directly_issued_by(_cert(second.ca_cert))
    with tls_server(second) as server:
        ctx = ssl.create_default_context(cafile=str(first.ca_cert))
        assert handshake(server.port, ctx, "localhost") == "h2"


def test_missing_server_cert_or_new_host_is_reissued(tmp_path: Path) -> None:
    first = make_dev_certs(tmp_path)
    ca_bytes = first.ca_cert.read_bytes()
    first.cert.unlink()
    make_dev_certs(tmp_path)
    assert first.cert.exists()
    make_dev_certs(tmp_path, hosts=["localhost", "gateway.internal"])
    san = _cert(first.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "gateway.internal" in san.get_values_for_type(x509.DNSName)
    assert first.ca_cert.read_bytes() == ca_bytes


def test_force_regenerates_everything(tmp_path: Path) -> None:
    first = make_dev_certs(tmp_path)
    old_ca = first.ca_cert.read_bytes()
    old_leaf = first.cert.read_bytes()
    old_ca_path = tmp_path / "old-ca.pem"
    old_ca_path.write_bytes(old_ca)

    second = make_dev_certs(tmp_path, force=True)
    assert second.ca_cert.read_bytes() != old_ca
    assert second.cert.read_bytes() != old_leaf
    assert _mode(tmp_path / "ca-key.pem") == 0o600
    assert _mode(second.key) == 0o600
    with tls_server(second) as server:
        new_ok = ssl.create_default_context(cafile=str(second.ca_cert))
        assert handshake(server.port, new_ok, "localhost") == "h2"
        old_trust = ssl.create_default_context(cafile=str(old_ca_path))
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(server.port, old_trust, "localhost")


def test_existing_ca_without_usable_key_is_not_replaced(tmp_path: Path) -> None:
    paths = make_dev_certs(tmp_path)
    ca_bytes = paths.ca_cert.read_bytes()
    (tmp_path / "ca-key.pem").unlink()
    with pytest.raises(CertError, match="force"):
        make_dev_certs(tmp_path)
    (tmp_path / "ca-key.pem").write_bytes(paths.key.read_bytes())  # wrong key
    with pytest.raises(CertError, match="does not match"):
        make_dev_certs(tmp_path)
    assert paths.ca_cert.read_bytes() == ca_bytes
    make_dev_certs(tmp_path, force=True)
    assert paths.ca_cert.read_bytes() != ca_bytes
