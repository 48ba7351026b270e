"""TLS and SuperNode authentication of the deployment runtime: the certificate writer, a
SuperLink that refuses SuperNodes whose key it has not registered, and a secure FedAvg run of
the smoke study that is bit for bit the in-process one."""

from __future__ import annotations

import ssl
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from distdd_nas.errors import ConfigError
from distdd_nas.federation.flower.security import (
    FederationCertificates,
    FederationSecurity,
    write_certificates,
    write_federation,
    write_node_key,
)
from distdd_nas.processes import LOOPBACK, ProcessGroup, free_ports

pytest.importorskip("cryptography")


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _tls_handshake(certfile: Path, keyfile: Path, cafile: Path, hostname: str) -> None:
    """A TLS handshake in memory: a server with ``certfile``/``keyfile``, a client that trusts
    only ``cafile`` and checks ``hostname`` (raises ssl.SSLCertVerificationError on failure)."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(certfile, keyfile)
    client_ctx = ssl.create_default_context(cafile=str(cafile))
    bios = [ssl.MemoryBIO() for _ in range(4)]  # client in/out, server in/out
    client = client_ctx.wrap_bio(bios[0], bios[1], server_hostname=hostname)
    server = server_ctx.wrap_bio(bios[2], bios[3], server_side=True)
    for _ in range(10):
        pending = False
        for end, out, peer_in in ((client, bios[1], bios[2]), (server, bios[3], bios[0])):
            try:
                end.do_handshake()
            except ssl.SSLWantReadError:
                pending = True
            peer_in.write(out.read())
        if not pending:
            return
    raise AssertionError("TLS handshake did not finish")


def test_certificate_writer_signs_the_server_certificate_for_loopback(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    certs = write_certificates(tmp_path / "certs", hosts=("10.0.0.7", "link.example.org"))
    ca = x509.load_pem_x509_certificate(certs.ca_certfile.read_bytes())
    server = x509.load_pem_x509_certificate(certs.certfile.read_bytes())
    server.verify_directly_issued_by(ca)  # raises unless the CA signed it
    ca.verify_directly_issued_by(ca)  # self-signed
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "10.0.0.7"}
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "link.example.org"}
    assert _mode(certs.keyfile) == _mode(tmp_path / "certs" / "ca.key") == 0o600
    assert _mode(certs.keyfile.parent) == 0o700
    # A TLS client that trusts only the CA accepts the server for these names, no other.
    for hostname in ("127.0.0.1", "localhost", "10.0.0.7"):
        _tls_handshake(certs.certfile, certs.keyfile, certs.ca_certfile, hostname)
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _tls_handshake(certs.certfile, certs.keyfile, certs.ca_certfile, "10.0.0.8")

    node = write_node_key(tmp_path / "certs", "supernode-0")
    private = serialization.load_ssh_private_key(node.private_key.read_bytes(), None)
    public = serialization.load_ssh_public_key(node.public_key.read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
    assert private.public_key() == public
    assert _mode(node.private_key) == 0o600
    assert node.supernode_args() == ["--auth-supernode-private-key", str(node.private_key)]


def test_bad_certificates_are_one_clear_config_error(tmp_path: Path) -> None:
    certs = write_certificates(tmp_path / "a")
    other = write_certificates(tmp_path / "b")
    mixed = FederationCertificates(other.ca_certfile, certs.certfile, certs.keyfile)
    with pytest.raises(ConfigError, match=r"a/server\.crt is not signed by the CA .*b/ca\.crt"):
        write_federation(tmp_path / "run", 1, certificates=mixed)
    other.certfile.write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"b/server\.crt is not a PEM certificate"):
        other.check()
    certs.keyfile.unlink()
    with pytest.raises(ConfigError, match=r"server\.key \(keyfile\) is missing") as err:
        write_federation(tmp_path / "run", 1, certificates=certs)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="plain file name"):
        write_node_key(tmp_path, "../escape")


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _wait_for(what: str, done: Callable[[], bool], *, log_dir: Path, timeout: float = 90) -> None:
    """Poll ``done`` until true; on timeout fail with every log of the run."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name}\n{p.read_text()}" for p in log_dir.glob("*.log"))
            raise AssertionError(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.1)


#: Why the SuperLink refuses each unknown SuperNode (Flower 1.42's API error messages).
REFUSALS = {
    "supernode-1": "[code: 2004] Failed to activate SuperNode",
    "supernode-keyless": "[code: 2001] SuperNode authentication is enabled",
}


@pytest.mark.flower
@pytest.mark.timeout(180)
def test_superlink_refuses_supernodes_it_has_not_registered(tmp_path: Path) -> None:
    """Node 0's key is registered, node 1 has a key nobody registered, a third node has none:
    only node 0 gets a node id; the other two are refused at activation and exit."""
    pytest.importorskip("flwr")
    from distdd_nas.federation.flower.deployment import (
        FEDERATION,
        register_nodes,
        start_superlink,
        start_supernodes,
    )
    from distdd_nas.federation.flower.launch import flower_env
    from distdd_nas.federation.flower.project import flwr_json, write_cli_config

    security = write_federation(tmp_path / "certificates", 2)
    link_port, *ports = free_ports(4)
    home = tmp_path / "flwr-home"
    env = flower_env(home / "cli")
    cafile = security.certificates.ca_certfile
    write_cli_config(home / "cli", name=FEDERATION, port=link_port, root_certificates=cafile)
    group = ProcessGroup(tmp_path / "logs", env)
    try:
        start_superlink(group, home=home, port=link_port, security=security, startup_timeout=60)
        first_only = FederationSecurity(security.certificates, security.node_keys[:1])
        (node_id,) = register_nodes(first_only, env=env, cwd=tmp_path, timeout=60)
        start_supernodes(group, home=home, link_port=link_port, ports=ports[:2], security=security)
        group.spawn(
            "supernode-keyless",
            [
                _bin("flower-supernode"),
                *security.certificates.supernode_args(),
                "--superlink",
                f"{LOOPBACK}:{link_port}",
                "--port",
                str(ports[2]),
            ],
            env={**env, "FLWR_HOME": str(home / "keyless")},
        )
        registered, *refused = group.items[1:]
        for node in refused:
            _wait_for(
                f"{node.name} to exit",
                lambda n=node: n.proc.poll() is not None,
                log_dir=group.log_dir,
            )
            assert node.proc.returncode != 0
            text = (group.log_dir / f"{node.name}.log").read_text()
            assert "Failed to initialize the connection to the SuperLink" in text
            assert REFUSALS[node.name] in text
            assert "SuperNode ID" not in text
        node_log = group.log_dir / "supernode-0.log"
        _wait_for(
            "node 0's id", lambda: "SuperNode ID" in node_log.read_text(), log_dir=group.log_dir
        )
        assert f"SuperNode ID: {node_id}" in node_log.read_text()
        assert registered.proc.poll() is None
        link_log = (group.log_dir / "superlink.log").read_text()
        assert "Uvicorn running on https://" in link_log
        assert "No SuperNode found with the given public key" in link_log
        listing = flwr_json(
            [_bin("flwr"), "supernode", "ls", FEDERATION, "--format", "json"],
            env=env,
            cwd=tmp_path,
            timeout=60,
        )
        assert [int(n["node-id"]) for n in listing["nodes"]] == [node_id]
    finally:
        survivors = group.stop()
    assert not survivors


ON_DEPLOYMENT = ("federation.engine=flower", "federation.flower_backend=deployment")
# The secure deployment run itself (TLS, registered nodes, results equal to in-process) is
# checked in test_on_engine.py::test_fedavg_on_flower_deployment_matches_inprocess.


def test_insecure_mode_is_explicit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``federation.flower_secure = false`` reaches the runner; certificates given to an
    insecure run are refused before anything starts."""
    pytest.importorskip("flwr")
    from distdd_nas.federation.flower import runtime
    from distdd_nas.federation.flower.deployment import run_on_deployment
    from tests.conftest import smoke

    asked: list[object] = []
    monkeypatch.setattr(runtime, "run_on_deployment", lambda *a, **kw: asked.append(kw["secure"]))
    runtime.run_on_flower(smoke(*ON_DEPLOYMENT), server_fn="m:f", out_dir=tmp_path)
    config = smoke(*ON_DEPLOYMENT, "federation.flower_secure=false")
    runtime.run_on_flower(config, server_fn="m:f", out_dir=tmp_path)
    assert asked == [True, False]
    certs = write_certificates(tmp_path / "certs")
    with pytest.raises(ConfigError, match="certificates were given to an insecure run"):
        run_on_deployment(
            None,
            server_fn="m:f",
            out_dir=tmp_path / "run",
            num_clients=1,
            secure=False,
            certificates=certs,
        )
    assert not (tmp_path / "run" / "logs").exists()
