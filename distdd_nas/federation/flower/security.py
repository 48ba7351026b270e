"""TLS certificates and SuperNode keys for Flower's deployment runtime (Flower 1.42).

A SuperLink started by the tooling serves TLS with a server certificate signed by a CA made for
the run, and admits only SuperNodes whose public keys were registered with it (node
authentication). This module writes those files, nothing else:

* :func:`write_certificates` — a self-signed CA (``ca.crt``, ``ca.key``) and the SuperLink's
  server certificate (``server.crt``, ``server.key``) whose subject-alternative names are
  127.0.0.1, localhost and any further ``hosts`` (the SuperLink's address seen from the nodes).
* :func:`write_node_key` — one SuperNode's EC key pair in OpenSSH format (Flower 1.42 loads the
  private key with ``load_ssh_private_key`` and the CLI's ``flwr supernode register`` reads the
  public key with ``load_ssh_public_key``; both need a NIST curve).

Private keys are created with mode 0600 (never readable by others, not even briefly), their
directory 0700. The returned objects name the files and the Flower flags that use them, so the
runner (:mod:`.deployment`) and the README cannot disagree on the flag names. ``cryptography``
comes with Flower; it is imported inside the writers, so this module loads without it.

Across machines, run ``python -m distdd_nas.federation.flower.security DIR --host SERVER
--nodes N`` once and copy the files (see the README, "Running at scale").
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from distdd_nas.errors import ConfigError

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

#: Names the server certificate is valid for when no other host is given (loopback runs).
LOCAL_HOSTS = ("127.0.0.1", "localhost")
#: Days a generated certificate is valid (a run's certificates are made fresh every run).
DEFAULT_DAYS = 365


def _require_files(paths: dict[str, Path | None]) -> None:
    """Raise ConfigError naming the first of ``paths`` (role → file) that is missing."""
    for role, path in paths.items():
        if path is not None and not Path(path).is_file():
            raise ConfigError(
                f"TLS file {path} ({role}) is missing; write it with "
                f"python -m distdd_nas.federation.flower.security or give an existing one"
            )


def _load_certificate(path: Path) -> x509.Certificate:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except ValueError as err:
        raise ConfigError(f"{path} is not a PEM certificate; give one") from err


@dataclass(frozen=True)
class FederationCertificates:
    """PEM files of one federation's TLS: the CA and the SuperLink's certificate it signed."""

    ca_certfile: Path
    certfile: Path
    keyfile: Path
    #: Needed only to issue certificates: None when it is kept elsewhere (offline).
    ca_keyfile: Path | None = None

    def check(self) -> None:
        """Raise :class:`ConfigError` (one line, naming the file) if a file is missing, a
        certificate is not PEM, or the CA did not sign the server certificate — before any
        process starts, rather than as a TLS failure in some process's log."""
        _require_files(
            {
                "ca_certfile": self.ca_certfile,
                "certfile": self.certfile,
                "keyfile": self.keyfile,
                "ca_keyfile": self.ca_keyfile,
            }
        )
        from cryptography.exceptions import InvalidSignature

        ca, server = _load_certificate(self.ca_certfile), _load_certificate(self.certfile)
        try:
            server.verify_directly_issued_by(ca)
        except (InvalidSignature, ValueError, TypeError) as err:
            raise ConfigError(
                f"{self.certfile} is not signed by the CA {self.ca_certfile}; give a matching pair"
            ) from err

    def superlink_args(self) -> list[str]:
        """``flower-superlink`` flags: serve TLS with these files."""
        return [
            "--ssl-ca-certfile",
            str(self.ca_certfile),
            "--ssl-certfile",
            str(self.certfile),
            "--ssl-keyfile",
            str(self.keyfile),
        ]

    def supernode_args(self) -> list[str]:
        """``flower-supernode`` flags: verify the SuperLink against this CA."""
        return ["--root-certificates", str(self.ca_certfile)]


@dataclass(frozen=True)
class NodeKey:
    """One SuperNode's authentication key pair (OpenSSH format, NIST P-384)."""

    private_key: Path
    public_key: Path

    def supernode_args(self) -> list[str]:
        """``flower-supernode`` flags: sign every Fleet request with this key."""
        return ["--auth-supernode-private-key", str(self.private_key)]


@dataclass(frozen=True)
class FederationSecurity:
    """What a secure federation runs with: TLS files and one key pair per SuperNode, in
    partition order. The flags here are the whole of Flower 1.42's TLS and node
    authentication; without this object a runner falls back to ``--insecure``."""

    certificates: FederationCertificates
    node_keys: tuple[NodeKey, ...]

    def superlink_args(self) -> list[str]:
        """``flower-superlink`` flags: TLS, and admit registered SuperNodes only."""
        return [*self.certificates.superlink_args(), "--enable-supernode-auth"]

    def supernode_args(self, index: int) -> list[str]:
        """``flower-supernode`` flags of SuperNode ``index``: verify the SuperLink, sign with
        its own key."""
        return [*self.certificates.supernode_args(), *self.node_keys[index].supernode_args()]


def write_federation(
    directory: Path, num_nodes: int, *, certificates: FederationCertificates | None = None
) -> FederationSecurity:
    """Write what a federation of ``num_nodes`` SuperNodes needs into ``directory``: loopback
    certificates (unless existing ``certificates`` are given; those are checked first) and the
    key pairs ``supernode-<i>``."""
    if certificates is None:
        certificates = write_certificates(directory)
    certificates.check()
    keys = tuple(write_node_key(directory, f"supernode-{i}") for i in range(num_nodes))
    return FederationSecurity(certificates, keys)


def _write_file(path: Path, data: bytes, *, private: bool) -> None:
    """Write ``path`` atomically; a private file is created 0600 so it is never readable by
    others, a public one 0644."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    mode = 0o600 if private else 0o644
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(fd, mode)  # O_CREAT keeps the mode of a file that already existed
        handle.write(data)
    os.replace(tmp, path)


def _make_dir(directory: Path) -> Path:
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return directory


def _new_key() -> ec.EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP384R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    """Subject-alternative names: an IP entry for every address, a DNS entry otherwise."""
    from cryptography import x509

    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    *,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    hosts: Sequence[str],
    days: int,
) -> x509.Certificate:
    """A CA certificate (``issuer`` None: self-signed) or a server certificate for ``hosts``
    signed by ``issuer``; valid from a minute ago (clock skew) for ``days`` days."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.UTC)
    is_ca = issuer is None
    signer_cert, signer_key = (None, key) if issuer is None else issuer
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name if signer_cert is None else signer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None), True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=not is_ca,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()), False
        )
    )
    if not is_ca:
        builder = builder.add_extension(_san(hosts), critical=False).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    return builder.sign(signer_key, hashes.SHA384())


def write_certificates(
    directory: Path, *, hosts: Sequence[str] = (), days: int = DEFAULT_DAYS
) -> FederationCertificates:
    """Write a fresh CA and a SuperLink server certificate signed by it into ``directory``.

    The server certificate names 127.0.0.1 and localhost plus ``hosts`` (IP addresses become
    IP entries, anything else DNS entries), so SuperNodes, the ``flwr`` CLI and Flower's own
    SuperExec can all verify it. Files: ``ca.crt``, ``ca.key``, ``server.crt``, ``server.key``;
    keys 0600. Existing files are replaced.
    """
    from cryptography.hazmat.primitives import serialization

    if days < 1:
        raise ConfigError(f"certificate validity of {days} days; give at least 1")
    directory = _make_dir(directory)
    ca_key, server_key = _new_key(), _new_key()
    ca_cert = _certificate("distdd-nas federation CA", ca_key, issuer=None, hosts=(), days=days)
    server_cert = _certificate(
        "distdd-nas SuperLink",
        server_key,
        issuer=(ca_cert, ca_key),
        hosts=(*LOCAL_HOSTS, *hosts),
        days=days,
    )
    certs = FederationCertificates(
        ca_certfile=directory / "ca.crt",
        certfile=directory / "server.crt",
        keyfile=directory / "server.key",
        ca_keyfile=directory / "ca.key",
    )
    _write_file(directory / "ca.key", _key_pem(ca_key), private=True)
    _write_file(certs.keyfile, _key_pem(server_key), private=True)
    pem = serialization.Encoding.PEM
    _write_file(certs.ca_certfile, ca_cert.public_bytes(pem), private=False)
    _write_file(certs.certfile, server_cert.public_bytes(pem), private=False)
    return certs


def write_node_key(directory: Path, name: str) -> NodeKey:
    """Write a SuperNode's key pair as ``<name>.key`` (0600) and ``<name>.pub`` (OpenSSH).

    The public key is what ``flwr supernode register`` sends to the SuperLink; the private
    key is what ``flower-supernode --auth-supernode-private-key`` signs its requests with.
    """
    from cryptography.hazmat.primitives import serialization

    if not name or Path(name).name != name:
        raise ConfigError(f"SuperNode key name {name!r} must be a plain file name")
    directory = _make_dir(directory)
    key = _new_key()
    node = NodeKey(private_key=directory / f"{name}.key", public_key=directory / f"{name}.pub")
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    _write_file(node.private_key, private, private=True)
    _write_file(node.public_key, public + f" {name}\n".encode(), private=False)
    return node


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m distdd_nas.federation.flower.security DIR --host SERVER --nodes N``: the
    files of a federation across machines (certificates and ``supernode-<i>`` keys)."""
    parser = argparse.ArgumentParser(
        prog="python -m distdd_nas.federation.flower.security",
        description="Write a CA, a SuperLink TLS certificate and SuperNode key pairs.",
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument("--host", action="append", default=[], help="SuperLink address")
    parser.add_argument("--nodes", type=int, default=0, help="number of SuperNode key pairs")
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS)
    args = parser.parse_args(argv)
    try:
        certs = write_certificates(args.directory, hosts=args.host, days=args.days)
        written = write_federation(args.directory, args.nodes, certificates=certs)
    except ConfigError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    print(f"wrote {certs.ca_certfile.parent}: CA, server certificate and key, ", end="")
    print(f"{len(written.node_keys)} SuperNode key pair(s)")
    return 0


__all__ = [
    "DEFAULT_DAYS",
    "LOCAL_HOSTS",
    "FederationCertificates",
    "FederationSecurity",
    "NodeKey",
    "main",
    "write_certificates",
    "write_federation",
    "write_node_key",
]


if __name__ == "__main__":
    raise SystemExit(main())
