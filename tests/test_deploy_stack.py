"""The stack of deploy/stack.py itself: what it listens on, and that stopping it stops everything
it started.

A small deployment (PostgreSQL, Redis, S3, ``dagster-daemon``, ``dagster-webserver``; no
Celery workers, no replicas: the model is an OpenAI-compatible server in this process that
answers slowly). Marked ``deploy`` (``make test-deploy``): it takes a few minutes.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest
import reverse_proxy
from live_deployment import TINY_SUITE, arithmetic_app
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from assay.serving import asgi_in_background
from deploy.registry_roles import SERVICE
from deploy.stack import (
    STACK_ID_VAR,
    LocalDeployment,
    missing_parts,
    processes_marked,
)

pytestmark = pytest.mark.deploy

PROMOTION_SENSOR = "model_promotion_sensor"


@pytest.fixture(scope="module")
def calls() -> list[str]:
    return []


@pytest.fixture(scope="module")
def model_server(calls) -> Iterator[str]:
    # 5 s a completion, one at a time: a run's model step lasts 40 s (8 instances).
    with asgi_in_background(arithmetic_app(calls, delay_s=5.0)) as running:
        yield running.base_url


@pytest.fixture(scope="module")
def stack(tmp_path_factory, model_cache_dir) -> Iterator[LocalDeployment]:
    missing = missing_parts()
    if missing:
        pytest.skip("the deployment needs " + "; ".join(missing))
    deployed = LocalDeployment(
        root=tmp_path_factory.mktemp("stack"),
        suite_yaml=TINY_SUITE,
        model_cache=model_cache_dir,
        workers=0,
        replicas=0,
        executor="multiprocess",  # the run's steps in processes of the run's own
    )
    with deployed:
        deployed.dagster(
            *("asset", "materialize", "-f", "definitions.py"),
            *("--select", "scenario_instances,perturbed_instances", "--partition", "arithmetic"),
        )
        deployed.dagster("sensor", "start", "-w", "workspace.yaml", PROMOTION_SENSOR)
        yield deployed


def _listening(processes: list[psutil.Process]) -> set[tuple[str, int]]:
    """The TCP addresses (ip, port) these processes listen on."""
    found = set()
    for process in processes:
        try:
            connections = process.net_connections(kind="tcp")
        except psutil.Error:
            continue
        found |= {(c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN}
    return found


def test_the_webserver_and_every_service_listen_on_loopback_only(stack):
    webserver = _listening(stack.services["webserver"].processes())
    assert ("127.0.0.1", stack.ports["webserver"]) in webserver
    everything = set(webserver)
    for service in stack.services.values():
        everything |= _listening(service.processes())
    postgres = [
        c.laddr.ip
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == stack.ports["postgres"]
    ]
    assert postgres and all(ipaddress.ip_address(ip).is_loopback for ip in postgres)
    exposed = {a for a in everything if not ipaddress.ip_address(a[0]).is_loopback}
    assert not exposed, f"listening beyond loopback: {sorted(exposed)}"


def test_the_proxy_signs_users_in_to_the_real_webserver(stack, tmp_path):
    reason = reverse_proxy.missing()
    if reason:
        pytest.skip(reason)
    with (
        reverse_proxy.reverse_proxy(tmp_path / "nginx", stack.ports["webserver"]) as proxy,
        httpx.Client(verify=proxy.tls, timeout=60) as client,
    ):
        assert client.get(f"{proxy.url}/server_info").status_code == 401
        signed_in = client.get(
            f"{proxy.url}/server_info", auth=(reverse_proxy.USER, reverse_proxy.PASSWORD)
        )
        assert signed_in.status_code == 200
        assert "dagster_webserver_version" in signed_in.json()


def test_the_deployment_uses_the_registry_as_the_service_role(stack):
    url = stack.env["ASSAY_REGISTRY_URL"]
    assert make_url(url).username == SERVICE
    assert make_url(stack.env["ASSAY_REQUEST_CACHE_URL"]).username == SERVICE
    stack.assay("registry", "create", "roles-check")  # the CLI works as the service role
    engine = create_engine(url)
    try:
        with pytest.raises(DBAPIError, match="must be owner"), engine.begin() as conn:
            conn.execute(text("ALTER TABLE events DISABLE TRIGGER events_append_only"))
    finally:
        engine.dispose()


def _describe(process: psutil.Process) -> str:
    try:
        return f"{process.pid} {' '.join(process.cmdline())[:160]}"
    except psutil.Error:
        return f"{process.pid} (gone)"


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_stop_ends_every_process_the_stack_started_also_with_a_run_in_flight(
    stack, model_server, calls
):
    """Last in this module: it stops the stack. A code server with a run in flight (the run's
    process and its step process in it) used to outlive the daemon's stop by minutes."""
    stack.assay("registry", "register", "--create-model", "slow", f"openai:{model_server}#right")
    stack.assay("registry", "alias", "set", "slow", "champion", "1")
    deadline = time.monotonic() + 300
    while not calls and time.monotonic() < deadline:
        time.sleep(1)
    assert calls, f"no model call within 300 s\n{stack.logs()}"

    before = {name: service.processes() for name, service in stack.services.items()}
    daemon = [_describe(p) for p in before["daemon"]]
    assert any("api grpc" in d for d in daemon), daemon  # the daemon's code server
    assert len(before["daemon"]) >= 4, daemon  # daemon, code server, the run's processes
    assert any("api grpc" in _describe(p) for p in before["webserver"])

    started = time.monotonic()
    stack.stop()
    took = time.monotonic() - started

    survivors = [f"{name}: {_describe(p)}" for name, ps in before.items() for p in ps if _alive(p)]
    assert not survivors, f"alive after the stack's stop ({took:.0f} s):\n" + "\n".join(survivors)
    assert processes_marked(STACK_ID_VAR, stack.stack_id) == []
    # SIGTERM, at most 20 s a service, then SIGKILL: bounded.
    assert took < 20 * len(before) + 30
