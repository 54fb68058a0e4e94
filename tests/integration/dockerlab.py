"""A bounded, self-cleaning Docker harness for the container test (root; Debian's docker.io and debootstrap).

* dockerd: used if one answers, else started here (and stopped again by PID at the end of the session);
* the base image: ``debootstrap --variant=minbase bookworm`` with python3 and python3-venv, from the Debian
  mirror apt already uses on this machine (read from /etc/apt/sources.list*, never written down here), slimmed
  and cached as a tarball under /var/cache/axiomnet-test so the next run only imports it;
* the build: ``docker build --network host`` of the project's Dockerfile with pip settings taken from the
  host's pip at run time (index URLs, trusted hosts) and the CA bundle $PIP_CERT (or pip's ``cert``) copied in;
* everything created (containers, networks, volumes, images, intermediate images) is recorded by ID and
  removed by ID at the end.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

REPO = Path(__file__).resolve().parents[2]
CACHE_DIR = Path("/var/cache/axiomnet-test")
BASE_TARBALL = CACHE_DIR / "debian-bookworm-python3.tar"
SUITE = "bookworm"
DOCKER_TIMEOUT = 60.0  # one ordinary docker command
DEBOOTSTRAP_TIMEOUT = 900.0
BUILD_TIMEOUT = 900.0
DOCKERD_START_TIMEOUT = 60.0
# What the image needs of the repository (the rest is left out of the build context).
CONTEXT_FILES = ("pyproject.toml", "README.md", "Dockerfile", ".dockerignore")
CONTEXT_DIRS = ("axiomnet", "ops", "actors", "lab")  # the package-dir folders (pyproject)
# Removed from the debootstrap tree before it is cached: package lists, downloaded .debs, docs, locales.
SLIM = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale",
        "usr/share/info")


class DockerUnavailable(Exception):
    """Docker cannot be used here; the message says why (the test skips, or fails under CI)."""


def run(args: Sequence[str], *, timeout: float = DOCKER_TIMEOUT, check: bool = True, input: bytes | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command bounded in time; on timeout its process group is killed."""
    proc = subprocess.Popen(list(args), stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"{' '.join(args[:4])} ... did not finish within {timeout:g} s") from None
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(errors="replace"),
                                         err.decode(errors="replace"))
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args[:6])} exited {result.returncode}: {result.stderr.strip()[-2000:]}")
    return result


# --- the Debian mirror apt uses here ----------------------------------------------------------------------
def apt_mirror(root: Path = Path("/")) -> str:
    """The URI of the first Debian source apt is configured with for ``bookworm`` (one-line or deb822)."""
    files = [root / "etc/apt/sources.list"] + sorted((root / "etc/apt/sources.list.d").glob("*"))
    for path in files:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            continue
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.+)$", stanza, flags=re.M))
                suites = fields.get("Suites", "").split()
                if fields.get("Enabled", "yes").lower() != "no" and "deb" in fields.get("Types", "").split() \
                        and SUITE in suites:
                    return fields["URIs"].split()[0]
        else:
            for line in text.splitlines():
                match = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
                if match and match.group(2) == SUITE:
                    return match.group(1)
    raise DockerUnavailable(f"no apt source for {SUITE} in /etc/apt/sources.list*: cannot debootstrap a base")


# --- the host's pip settings -----------------------------------------------------------------------------
def pip_settings(env: dict[str, str] | None = None) -> dict[str, str]:
    """PIP_* values the host's pip uses that a build container can use too (network indexes, trusted hosts,
    the CA bundle path); local paths (file:// indexes, find-links directories) are left out."""
    env = dict(os.environ if env is None else env)
    proc = run([sys.executable, "-m", "pip", "config", "list"], check=False, env=env)
    config: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            name = key.split(".", 1)[-1].strip()
            config.setdefault(name, value.strip().strip("'\""))
    settings: dict[str, str] = {}
    for name, variable in (("index-url", "PIP_INDEX_URL"), ("extra-index-url", "PIP_EXTRA_INDEX_URL")):
        value = env.get(variable) or config.get(name, "")
        urls = [url for url in value.split() if url.startswith(("http://", "https://"))]
        if urls:
            settings[variable] = " ".join(urls)
    trusted = env.get("PIP_TRUSTED_HOST") or config.get("trusted-host", "")
    if trusted:
        settings["PIP_TRUSTED_HOST"] = trusted
    cert = env.get("PIP_CERT") or config.get("cert", "")
    if cert and Path(cert).is_file():
        settings["PIP_CERT"] = cert
    return settings


# --- docker ----------------------------------------------------------------------------------------------
class Docker:
    """The docker CLI against a daemon that answers (started here if needed), and what this run created."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.cli = shutil.which("docker")
        self.dockerd: subprocess.Popen[bytes] | None = None
        self.dockerd_log: Path | None = None
        self.containers: list[str] = []
        self.networks: list[str] = []
        self.volumes: list[str] = []
        self.images: list[str] = []

    def __call__(self, *args: str, timeout: float = DOCKER_TIMEOUT, check: bool = True,
                 input: bytes | None = None) -> subprocess.CompletedProcess[str]:
        assert self.cli is not None
        env = dict(os.environ, DOCKER_BUILDKIT="0")  # the classic builder: --network host, no buildx plugin
        return run([self.cli, *args], timeout=timeout, check=check, input=input, env=env)

    def answers(self) -> bool:
        return self.cli is not None and self("info", "--format", "{{.ServerVersion}}", check=False,
                                             timeout=20).returncode == 0

    def ensure_daemon(self) -> None:
        if self.cli is None:
            raise DockerUnavailable("the docker command is missing (apt-get install docker.io)")
        if self.answers():
            return
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise DockerUnavailable("no Docker daemon answers and dockerd is missing (apt-get install docker.io)")
        if os.geteuid() != 0:
            raise DockerUnavailable("no Docker daemon answers and starting dockerd needs root")
        handle, name = tempfile.mkstemp(prefix="axiomnet-dockerd-", suffix=".log")
        self.dockerd_log = Path(name)
        with os.fdopen(handle, "wb") as log:
            self.dockerd = subprocess.Popen([dockerd], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + DOCKERD_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.dockerd.poll() is not None:
                break
            if self.answers():
                return
            time.sleep(0.5)
        tail = self.dockerd_log.read_text(errors="replace").strip().splitlines()[-5:]
        self.stop_daemon()
        raise DockerUnavailable("dockerd could not start here: " + " | ".join(tail))

    def stop_daemon(self) -> None:
        """Stop the dockerd this harness started (by PID), if any."""
        if self.dockerd is None:
            return
        if self.dockerd.poll() is None:
            self.dockerd.send_signal(signal.SIGTERM)
            try:
                self.dockerd.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.dockerd.pid, signal.SIGKILL)
                self.dockerd.wait(timeout=10)
        self.dockerd = None

    def image_ids(self) -> set[str]:
        return set(self("images", "-a", "-q", "--no-trunc").stdout.split())

    # --- images ----------------------------------------------------------------------------------------
    def base_image(self) -> str:
        """Import the cached Debian base (building the cache first if needed); returns the image ID."""
        CACHE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        with open(CACHE_DIR / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two runs at once build the cache once
            if not BASE_TARBALL.exists():
                self._debootstrap()
        with open(BASE_TARBALL, "rb") as tarball:
            proc = subprocess.run([str(self.cli), "import", "-", f"axiomnet-test-base:{self.run_id}"], stdin=tarball,
                                  capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise AssertionError(f"docker import failed: {proc.stderr.strip()}")
        image = proc.stdout.strip()
        self.images.append(image)
        return image

    def _debootstrap(self) -> None:
        if shutil.which("debootstrap") is None:
            raise DockerUnavailable("debootstrap is missing (apt-get install debootstrap)")
        mirror = apt_mirror()
        with tempfile.TemporaryDirectory(prefix="axiomnet-base-") as tmp:
            root = Path(tmp) / "root"
            run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv", SUITE, str(root), mirror],
                timeout=DEBOOTSTRAP_TIMEOUT)
            for part in SLIM:
                for child in (root / part).glob("*"):
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
            partial = BASE_TARBALL.with_suffix(f".tmp{os.getpid()}")
            run(["tar", "-C", str(root), "-cf", str(partial), "."], timeout=300)
            os.replace(partial, BASE_TARBALL)

    def build(self, base: str) -> str:
        """Build the project's Dockerfile on ``base`` with the host's pip settings; returns the image ID."""
        with tempfile.TemporaryDirectory(prefix="axiomnet-context-") as context:
            ctx = Path(context)
            for name in CONTEXT_FILES:
                shutil.copy2(REPO / name, ctx / name)
            for name in CONTEXT_DIRS:
                shutil.copytree(REPO / name, ctx / name, symlinks=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            args = ["build", "--network", "host", "--force-rm", "-q", "-t", f"axiomnet-test:{self.run_id}",
                    "--build-arg", f"BASE={base}"]
            for variable, value in pip_settings().items():
                if variable == "PIP_CERT":
                    shutil.copy2(value, ctx / "pip-ca.pem")
                    value = "/src/pip-ca.pem"
                args += ["--build-arg", f"{variable}={value}"]
            for variable in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
                if os.environ.get(variable):
                    args += ["--build-arg", f"{variable}={os.environ[variable]}"]
            before = self.image_ids()
            try:
                result = self(*args, str(ctx), timeout=BUILD_TIMEOUT)
            finally:
                # Every image the build made (the first stage's too) goes at the end, by ID.
                self.images.extend(sorted(self.image_ids() - before))
        image = result.stdout.strip().splitlines()[-1]
        if image not in self.images:
            self.images.append(image)
        return image

    # --- containers ------------------------------------------------------------------------------------
    def network(self) -> str:
        network = self("network", "create", f"axiomnet-test-{self.run_id}").stdout.strip()
        self.networks.append(network)
        return network

    def volume(self, tag: str) -> str:
        volume = self("volume", "create", f"axiomnet-test-{self.run_id}-{tag}").stdout.strip()
        self.volumes.append(volume)
        return volume

    def run_container(self, image: str, name: str, *args: str, options: Sequence[str] = ()) -> str:
        container = self("run", "-d", "--name", f"axiomnet-test-{self.run_id}-{name}", *options, image,
                         *args).stdout.strip()
        self.containers.append(container)
        return container

    def inspect(self, thing: str) -> dict[str, Any]:
        document = json.loads(self("inspect", thing).stdout)
        assert isinstance(document, list) and document
        result: dict[str, Any] = document[0]
        return result

    def cleanup(self) -> list[str]:
        """Remove what this run created, by ID; returns the problems (empty when all went)."""
        problems = []
        for kind, items, command in (("container", self.containers, ("rm", "-f", "-v")),
                                     ("network", self.networks, ("network", "rm")),
                                     ("volume", self.volumes, ("volume", "rm", "-f"))):
            for item in items:
                proc = self(*command, item, check=False, timeout=120)
                if proc.returncode != 0 and "No such" not in proc.stderr:
                    problems.append(f"{kind} {item[:19]}: {proc.stderr.strip()}")
            items.clear()
        # Images depend on each other (a child before its parent): remove what can go, pass after pass.
        remaining, errors = list(dict.fromkeys(reversed(self.images))), {}
        for _ in range(len(remaining) + 1):
            if not remaining:
                break
            left = []
            for image in remaining:
                proc = self("rmi", "-f", image, check=False, timeout=120)
                if proc.returncode != 0 and "No such image" not in proc.stderr:
                    left.append(image)
                    errors[image] = proc.stderr.strip()
            if len(left) == len(remaining):
                break
            remaining = left
        problems += [f"image {image[:19]}: {errors[image]}" for image in remaining]
        self.images.clear()
        return problems


@contextlib.contextmanager
def docker_session(run_id: str) -> Iterator[Docker]:
    """A Docker harness whose creations (and any dockerd it started) are gone afterwards."""
    docker = Docker(run_id)
    try:
        docker.ensure_daemon()
        yield docker
    finally:
        try:
            problems = docker.cleanup() if docker.answers() else []
        finally:
            docker.stop_daemon()
        if problems:
            raise AssertionError("cleanup left: " + "; ".join(problems))
