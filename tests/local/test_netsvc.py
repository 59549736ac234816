"""The local DNS server and registry: real dnsmasq and docker-registry on the docker bridge gateway."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_runnerconf.local import engine, images, netsvc

REGISTRY = netsvc.REGISTRY_HOST
BOTH = (socket.SOCK_DGRAM, socket.SOCK_STREAM)


@pytest.fixture(scope="module")
def gateway(docker_client: Any) -> str:
    return netsvc.bridge_gateway(docker_client)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    # Whatever a failing test left running is stopped here, so no test leaks a server.
    netsvc.stop_all(tmp_path)


@pytest.fixture
def dns(home: Path, gateway: str) -> netsvc.Service:
    # A free port, not 53: a live local cluster on this machine may hold 53 already.
    port = netsvc.free_port(gateway, BOTH)
    records = {REGISTRY: gateway, "alias.runnerconf.test": "172.17.0.99"}
    return netsvc.start_dns(home, gateway, records, port=port)


@pytest.fixture
def registry(home: Path, gateway: str) -> netsvc.Service:
    return netsvc.start_registry(home, gateway, port=netsvc.free_port(gateway))


def _port(service: netsvc.Service) -> int:
    return int(service.address.rsplit(":", 1)[1])


def test_gateway_is_the_bridge_address(docker_client: Any, gateway: str) -> None:
    out = docker_client.containers.run(
        images.ensure_images(docker_client, ["tiny"], log=lambda _line: None)["tiny"],
        ["sh", "-c", "ip route | awk '/default/ {print $3}'"],
        remove=True,
    )
    assert out.decode().strip() == gateway


def test_dns_answers_only_its_records_and_forwards_nothing(dns: netsvc.Service, gateway: str) -> None:
    port = _port(dns)
    answer = netsvc.dns_query(gateway, REGISTRY, port=port)
    assert (answer.rcode, answer.addresses, answer.authoritative) == (0, (gateway,), True)
    assert netsvc.dns_query(gateway, "alias.runnerconf.test", port=port).addresses == ("172.17.0.99",)

    for unknown in ("nope.runnerconf.test", "web.default.svc.cluster.local"):
        assert netsvc.dns_query(gateway, unknown, port=port).nxdomain, unknown
    aaaa = netsvc.dns_query(gateway, REGISTRY, port=port, qtype=28)
    assert (aaaa.rcode, aaaa.addresses) == (0, ())

    # Outside its zones it has no upstream to ask: refused, never an address.
    outside = netsvc.dns_query(gateway, "example.com", port=port)
    assert outside.addresses == () and outside.rcode != 0
    log = dns.log_file.parent.joinpath("dns.log").read_text()
    assert "query[A] example.com" in log
    assert "forwarded" not in log


def test_dns_listens_on_the_gateway_only(dns: netsvc.Service) -> None:
    with pytest.raises(OSError):
        netsvc.dns_query("127.0.0.1", REGISTRY, port=_port(dns), timeout=0.3)


def test_start_refuses_a_port_someone_else_holds(dns: netsvc.Service, gateway: str, tmp_path: Path) -> None:
    other_home = tmp_path / "other"
    with pytest.raises(netsvc.ServiceError, match="already in use"):
        netsvc.start_dns(other_home, gateway, {REGISTRY: gateway}, port=_port(dns))
    assert dns.alive()
    assert list((other_home / "run").glob("*.pid")) == []


def test_restart_under_the_same_home_replaces_the_old_process(
    dns: netsvc.Service, home: Path, gateway: str
) -> None:
    port = _port(dns)
    second = netsvc.start_dns(home, gateway, {REGISTRY: "172.17.0.42"}, port=port)
    assert not dns.alive() and second.alive() and second.pid != dns.pid
    assert netsvc.dns_query(gateway, REGISTRY, port=port).addresses == ("172.17.0.42",)
    dns.stop()  # the old handle must not touch its successor's pid file
    assert second.alive() and second.pid_file.read_text().strip() == str(second.pid)


def test_push_is_idempotent_and_leaves_no_local_tag(
    docker_client: Any, registry: netsvc.Service, gateway: str
) -> None:
    port = _port(registry)
    tiny = images.ensure_images(docker_client, ["tiny"], log=lambda _line: None)["tiny"]
    assert netsvc.registry_catalog(gateway, port) == []

    ref = netsvc.push_to_registry(docker_client, tiny, "runnerconf/tiny", gateway, port)
    assert ref == f"{REGISTRY}:{port}/runnerconf/tiny:latest"
    assert netsvc.registry_catalog(gateway, port) == ["runnerconf/tiny"]
    image_id = docker_client.images.get(tiny).id
    assert netsvc.registry_config_digest(gateway, port, "runnerconf/tiny", "latest") == image_id
    assert netsvc.registry_config_digest(gateway, port, "runnerconf/tiny", "other") == ""

    blobs = sorted((registry.log_file.parent.parent / "registry").rglob("data"))
    started = time.monotonic()
    assert netsvc.push_to_registry(docker_client, tiny, "runnerconf/tiny", gateway, port) == ref
    assert time.monotonic() - started < 1
    assert sorted((registry.log_file.parent.parent / "registry").rglob("data")) == blobs

    tagged = [t for i in docker_client.images.list() for t in i.tags if t.startswith("127.0.0.1:")]
    assert tagged == []


def test_dind_pulls_from_the_registry(
    docker_client: Any, registry: netsvc.Service, home: Path, gateway: str
) -> None:
    """The path a DinD pull test uses: the name from our DNS, the image from our registry over plain HTTP."""
    # resolv.conf cannot name a port, so our DNS must be on 53; a live local cluster may hold 53 already,
    # and then the name comes from /etc/hosts instead (the registry half is still checked).
    own_dns = netsvc.port_free(gateway, 53, BOTH)
    if own_dns:
        netsvc.start_dns(home, gateway, {REGISTRY: gateway})
    name_source: dict[str, Any] = {"dns": [gateway]} if own_dns else {"extra_hosts": {REGISTRY: gateway}}
    port = _port(registry)
    built = images.ensure_images(docker_client, ["tiny", "dind"], log=lambda _line: None)
    ref = netsvc.push_to_registry(docker_client, built["tiny"], "tiny:v1", gateway, port)
    kwargs, _mode = engine.privileged_kwargs(docker_client)
    dind = docker_client.containers.run(
        built["dind"], ["--insecure-registry", f"{REGISTRY}:{port}"], detach=True, **name_source, **kwargs
    )
    try:
        deadline = time.monotonic() + 30
        while dind.exec_run(["docker", "info"]).exit_code != 0:
            assert time.monotonic() < deadline, dind.logs()[-2000:]
            time.sleep(0.1)
        pulled = dind.exec_run(["docker", "pull", ref])
        assert pulled.exit_code == 0, pulled.output
        ran = dind.exec_run(["docker", "run", "--rm", ref, "echo", "hello-from-registry"])
        assert ran.output.decode().strip() == "hello-from-registry"
    finally:
        dind.remove(force=True, v=True)
    if own_dns:
        assert f"query[A] {REGISTRY}" in (home / "run" / "dns.log").read_text()


def test_stop_all_stops_everything_and_frees_the_ports(
    dns: netsvc.Service, registry: netsvc.Service, home: Path, gateway: str
) -> None:
    pids = [dns.pid, registry.pid]
    assert sorted(netsvc.stop_all(home)) == ["dns", "registry"]
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert list((home / "run").glob("*.pid")) == []
    assert netsvc.port_free(gateway, _port(dns), BOTH)
    assert netsvc.port_free(gateway, _port(registry))
    assert netsvc.stop_all(home) == []


def test_service_stop_and_alive(registry: netsvc.Service, gateway: str) -> None:
    assert registry.alive()
    registry.stop()
    assert not registry.alive()
    assert not registry.pid_file.exists()
    assert netsvc.port_free(gateway, _port(registry))


def test_stop_all_leaves_processes_that_are_not_ours(home: Path) -> None:
    run = home / "run"
    run.mkdir(parents=True, exist_ok=True)
    (run / "impostor.pid").write_text(f"{os.getpid()}\n")
    assert netsvc.stop_all(home) == []
    assert not (run / "impostor.pid").exists()  # a stale pid file is cleared, the process is spared


def test_a_registry_with_htpasswd_wants_the_right_login(home: Path, gateway: str) -> None:
    import base64

    htpasswd = netsvc.write_htpasswd(home / "htpasswd", "rc-user", "rc-password")
    assert htpasswd.read_text().startswith("rc-user:$2b$05$") and htpasswd.stat().st_mode & 0o077 == 0
    port = netsvc.free_port(gateway)
    service = netsvc.start_registry(home, gateway, port, name="auth-registry", htpasswd=htpasswd)
    url = f"http://{gateway}:{port}/v2/"
    try:

        def status(user: str, password: str) -> int:
            auth = base64.b64encode(f"{user}:{password}".encode()).decode()
            return netsvc._http_status(url, {"Authorization": f"Basic {auth}"})

        assert netsvc._http_status(url) == 401
        assert status("rc-user", "rc-password") == 200
        assert status("rc-user", "wrong") == 401
    finally:
        service.stop()


def test_the_egress_guard_rejects_what_the_bridge_forwards_elsewhere(docker_client: Any) -> None:
    import subprocess

    from pytest_runnerconf.local import egress

    bridge = netsvc.bridge_name(docker_client)
    was = egress.guarded(bridge)
    egress.guard(bridge)
    egress.guard(bridge)  # idempotent: one rule
    rules = subprocess.run(
        ["iptables", "-S", "DOCKER-USER"], capture_output=True, text=True, check=True
    ).stdout
    ours = [r for r in rules.splitlines() if egress.COMMENT in r]
    assert len(ours) == 1
    assert f"-i {bridge} ! -o {bridge}" in ours[0] and "-j REJECT" in ours[0]
    if not was:
        egress.unguard(bridge)
        assert not egress.guarded(bridge)


def test_cleanup_removes_a_left_guard_only_when_no_cluster_runs(docker_client: Any, tmp_path: Path) -> None:
    import socket as _socket

    from pytest_runnerconf.local import egress
    from pytest_runnerconf.local.cluster import cleanup_leftovers

    bridge = netsvc.bridge_name(docker_client)
    running = not netsvc.port_free(netsvc.bridge_gateway(docker_client), 53, (_socket.SOCK_DGRAM,))
    was = egress.guarded(bridge)
    egress.guard(bridge)
    cleanup_leftovers(docker_client, tmp_path)  # a home with nothing in it
    # a running cluster (its DNS holds port 53) keeps its guard; with none, the left rule goes
    assert egress.guarded(bridge) is running
    if was and not egress.guarded(bridge):
        egress.guard(bridge)
