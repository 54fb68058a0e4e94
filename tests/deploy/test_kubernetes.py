"""deploy/kubernetes/ validates against the Kubernetes schemas (kubernetes-validate, offline) and asks for
what the daemon needs: host network, NET_ADMIN, /dev/net/tun, the identity on a hostPath, health probes."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from axiomnet.ops.config import load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.29.0"  # a version most clusters run; the package ships its schemas


def documents() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(DEPLOY.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found[document["kind"]] = document
    return found


@pytest.mark.parametrize("kind", ["Namespace", "ConfigMap", "DaemonSet"])
def test_manifest_is_valid_against_the_schema(kind: str) -> None:
    document = documents()[kind]
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_validation_has_teeth() -> None:
    broken = copy.deepcopy(documents()["DaemonSet"])
    broken["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_daemonset_has_host_network_tun_identity_and_probes() -> None:
    pod = documents()["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    (container,) = pod["containers"]
    assert container["securityContext"]["capabilities"]["add"] == ["NET_ADMIN"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts["/dev/net/tun"]]["hostPath"] == {"path": "/dev/net/tun", "type": "CharDevice"}
    assert volumes[mounts["/var/lib/axiomnet"]]["hostPath"]["path"] == "/var/lib/axiomnet"
    assert container["livenessProbe"]["exec"]["command"] == ["axiomnet-inspect", "health", "--liveness"]
    assert container["readinessProbe"]["exec"]["command"] == ["axiomnet-inspect", "health"]
    config_volume = volumes[mounts["/etc/axiomnet"]]["configMap"]["name"]
    assert config_volume == documents()["ConfigMap"]["metadata"]["name"]
    assert container["args"] == ["--config", "/etc/axiomnet/axiomnet.toml"]


def test_configmap_holds_a_valid_config(tmp_path: Path) -> None:
    path = tmp_path / "axiomnet.toml"
    path.write_text(documents()["ConfigMap"]["data"]["axiomnet.toml"])
    config = load_config(config_file=path, env={}, overrides={})
    assert config.peers and config.listen_port == 7443
