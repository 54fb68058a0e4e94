"""The project's Dockerfile, built and run for real: two containers peer and ping over the overlay, the health
check turns healthy, `docker stop` is quick and clean, and the identity on a named volume outlives its container.

Needs root, Debian's docker.io and debootstrap (the README's test command installs them). It skips with the
reason where Docker cannot run, except under CI=true, where it fails instead. The first run builds a Debian
base with debootstrap and caches it under /var/cache/axiomnet-test (about a minute); later runs import it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator

import pytest

from axiomnet.lab import namespaces, processes, traffic
from tests.integration import dockerlab

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

RUN_OPTIONS = ("--cap-add", "NET_ADMIN", "--device", "/dev/net/tun", "--sysctl", "net.ipv6.conf.all.disable_ipv6=0",
               "--health-interval", "2s")  # the image's own check, run every 2 s instead of 30 s: a short test
HEALTHY_TIMEOUT = 60.0
STOP_LIMIT = 5.0


def _required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("AXIOMNET_REQUIRE_DOCKER") == "1"


@pytest.fixture(scope="module")
def docker() -> Iterator[dockerlab.Docker]:
    try:
        with dockerlab.docker_session(namespaces.new_run_id()) as session:
            yield session
    except dockerlab.DockerUnavailable as exc:
        if _required():
            pytest.fail(f"container test cannot run here but CI requires it: {exc}")
        pytest.skip(f"container test skipped: {exc}")


@pytest.fixture(scope="module")
def image(docker: dockerlab.Docker) -> str:
    started = time.monotonic()
    base = docker.base_image()
    built = docker.build(base)
    print(f"\nbase + image built in {time.monotonic() - started:.0f} s; "
          f"image size {docker.inspect(built)['Size'] / 1e6:.0f} MB")
    return built


def wait_for(predicate, timeout: float, interval: float = 0.5) -> bool:  # type: ignore[no-untyped-def]
    return processes.wait_until(predicate, timeout, interval=interval)


def health(docker: dockerlab.Docker, container: str) -> str:
    state = docker.inspect(container)["State"]
    return str((state.get("Health") or {}).get("Status", "none"))


def inspect_json(docker: dockerlab.Docker, container: str, section: str) -> object:
    return json.loads(docker("exec", container, "axiomnet-inspect", "--json", section).stdout)


def established(docker: dockerlab.Docker, container: str) -> bool:
    proc = docker("exec", container, "axiomnet-inspect", "--json", "sessions", check=False)
    return proc.returncode == 0 and any(s.get("state") == "established" for s in json.loads(proc.stdout))


def logs(docker: dockerlab.Docker, *containers: str) -> str:
    return "\n".join(docker("logs", "--tail", "30", c, check=False).stderr for c in containers)


def test_image_runs_two_peers_healthy_stops_fast_and_keeps_its_identity(docker: dockerlab.Docker, image: str) -> None:
    config = docker.inspect(image)["Config"]
    assert config["Healthcheck"]["Test"][1:3] == ["axiomnet-inspect", "health"]
    assert config["Entrypoint"] == ["axiomnet", "daemon"] and config["StopSignal"] == "SIGTERM"
    assert "/var/lib/axiomnet" in config["Volumes"]

    network = docker.network()
    volume = docker.volume("a")
    name_a = f"axiomnet-test-{docker.run_id}-a"
    a = docker.run_container(image, "a", options=("--network", network, "-v", f"{volume}:/var/lib/axiomnet",
                                                  *RUN_OPTIONS))
    b = docker.run_container(image, "b", "--peer", f"{name_a}:7443", options=("--network", network, *RUN_OPTIONS))

    # They peer, and the overlay carries a ping from A's network namespace to B's overlay address.
    assert wait_for(lambda: established(docker, a) and established(docker, b), 60.0), logs(docker, a, b)
    address_a = inspect_json(docker, a, "self")["address"]  # type: ignore[index]
    address_b = inspect_json(docker, b, "self")["address"]  # type: ignore[index]
    pid_a = docker.inspect(a)["State"]["Pid"]
    assert shutil.which("nsenter"), "nsenter (util-linux) is needed to ping from the container's namespace"
    ping = dockerlab.run(["nsenter", "-t", str(pid_a), "-n", "ping", "-6", "-n", "-c", "3", "-W", "2",
                          address_b], check=False, timeout=30)
    result = traffic.parse_ping_output(ping.stdout)
    assert result.received == 3, ping.stdout + ping.stderr

    # The image's HEALTHCHECK (axiomnet-inspect health --liveness) turns both healthy.
    assert wait_for(lambda: health(docker, a) == "healthy" and health(docker, b) == "healthy", HEALTHY_TIMEOUT), \
        (health(docker, a), health(docker, b), docker.inspect(a)["State"].get("Health"))

    # docker stop: SIGTERM, exit 0 well within the runtime's patience.
    started = time.monotonic()
    docker("stop", "-t", "20", b, timeout=60)
    took = time.monotonic() - started
    state_b = docker.inspect(b)["State"]
    assert state_b["ExitCode"] == 0, logs(docker, b)
    assert took < STOP_LIMIT, f"docker stop took {took:.1f} s"

    # The identity lives on the named volume: a new container on it has the same address.
    docker("stop", "-t", "20", a, timeout=60)
    docker("rm", a)
    docker.containers.remove(a)
    again = docker.run_container(image, "a2", options=("--network", network, "-v", f"{volume}:/var/lib/axiomnet",
                                                      *RUN_OPTIONS))
    assert wait_for(lambda: docker("exec", again, "axiomnet-inspect", "health", check=False).returncode != 2, 30.0), \
        logs(docker, again)
    assert inspect_json(docker, again, "self")["address"] == address_a  # type: ignore[index]
    shown = json.loads(docker("exec", again, "axiomnet", "identity", "show", "--json").stdout)
    assert shown["address"] == address_a and shown["created"] is False
