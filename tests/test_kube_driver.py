"""Least privilege on the Kubernetes side: Secret metadata only, RBAC refusals skip, no redirects, no clear text.

Against the local Kubernetes API in-process (loopback, no Docker) and a loopback fake that redirects.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_runnerconf import rbac
from pytest_runnerconf.errors import ConfigError, KubeError
from pytest_runnerconf.kube_driver import METADATA_LIST_ACCEPT, KubeDriver, SecretsForbidden
from pytest_runnerconf.local.httpserve import LoopbackServer, Response, Router
from pytest_runnerconf.local.kstore import KubeStore
from pytest_runnerconf.local.kube_api import KubeAPI, write_kubeconfig
from pytest_runnerconf.profile import Profile, profile_from_table
from pytest_runnerconf.scrub import KNOWN, scrub_text

NS = "ci"
POD = "runner-abcdefghi-project-42-concurrent-0-x1y2z3w4"
DOCKERCFG = "eyJyZWdpc3RyeS5leGFtcGxlLmNvbSI6eyJhdXRoIjoiZFhObGNqcHdZWE56In19"


def _profile(kubeconfig: Path, context: str, **extra: Any) -> Profile:
    table = {
        "gitlab_url": "https://gitlab.example.com",
        "token_env": "T",
        "project": "g/p",
        "namespace": NS,
        "kubeconfig": str(kubeconfig),
        "kube_context": context,
        **extra,
    }
    return profile_from_table("t", table, "runnerconf.toml")


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[tuple[KubeStore, Path]]:
    store = KubeStore()
    store.create({"kind": "Namespace", "metadata": {"name": NS}})
    owner = [{"apiVersion": "v1", "kind": "Pod", "name": POD, "uid": "u-1"}]
    store.create(
        {
            "kind": "Secret",
            "metadata": {
                "name": POD.replace("x1y2z3w4", "s3cr3t00"),
                "namespace": NS,
                "ownerReferences": owner,
            },
            "type": "kubernetes.io/dockercfg",
            "data": {".dockercfg": DOCKERCFG},
        }
    )
    store.create(
        {
            "kind": "Secret",
            "metadata": {"name": "database-password", "namespace": NS},
            "type": "Opaque",
            "data": {"password": "aHVudGVyMg=="},
        }
    )
    tokens = {"least-token-000001": rbac.grants(["secrets"]), "no-secrets-token-02": rbac.grants([])}
    api = KubeAPI(store, tokens)
    url = api.start().url
    contexts = {"least": "least-token-000001", "no-secrets": "no-secrets-token-02"}
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url, contexts, "least", NS)
    yield store, kubeconfig
    api.stop()


def test_secret_metadata_only_is_asked_for_and_received(
    kube: tuple[KubeStore, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _store, kubeconfig = kube
    driver = KubeDriver(_profile(kubeconfig, "least"))
    bodies: list[dict[str, Any]] = []
    raw = driver._raw

    def spy(call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        assert kwargs.get("_headers") == {"Accept": METADATA_LIST_ACCEPT}
        assert kwargs.get("field_selector") == "type=kubernetes.io/dockercfg"
        body = raw(call, *args, **kwargs)
        bodies.append(body)
        return body

    monkeypatch.setattr(driver, "_raw", spy)
    found = driver.list_secret_meta("-project-42-")
    assert [s["name"] for s in found] == [POD.replace("x1y2z3w4", "s3cr3t00")]
    assert found[0]["owner_references"][0]["name"] == POD
    (body,) = bodies
    assert body["kind"] == "PartialObjectMetadataList"
    assert all(set(item) == {"kind", "apiVersion", "metadata"} for item in body["items"])
    assert DOCKERCFG not in repr(body) and "database-password" not in repr(body), "no data, no other types"


def test_no_rbac_for_secrets_is_a_reason_to_skip(kube: tuple[KubeStore, Path]) -> None:
    _store, kubeconfig = kube
    driver = KubeDriver(_profile(kubeconfig, "no-secrets"))
    with pytest.raises(SecretsForbidden, match=r"needs `list` on secrets \(see `runnerconf rbac`\)"):
        driver.list_secret_meta("-project-42-")
    assert driver.list_pods("project.runner.gitlab.com/id=42")["items"] == []  # the rest is granted


def test_the_server_version_is_read_for_the_report(kube: tuple[KubeStore, Path], tmp_path: Path) -> None:
    from pytest_runnerconf.local.kube_api import GIT_VERSION

    _store, kubeconfig = kube
    assert KubeDriver(_profile(kubeconfig, "least")).server_version() == GIT_VERSION
    # A server that cannot be read leaves the header without a version; the run goes on.
    gone = write_kubeconfig(tmp_path / "gone", "https://127.0.0.1:9", {"least": "t"}, "least", NS)
    assert KubeDriver(_profile(gone, "least")).server_version() == ""


def test_the_kubeconfig_bearer_token_is_masked_in_output(kube: tuple[KubeStore, Path]) -> None:
    _store, kubeconfig = kube
    KubeDriver(_profile(kubeconfig, "least"))
    try:
        assert scrub_text("sent least-token-000001") == "sent [MASKED]"
    finally:
        KNOWN.clear()


def _kubeconfig(path: Path, server: str, user: dict[str, Any]) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "prod", "context": {"cluster": "c", "user": "u", "namespace": NS}}],
        "current-context": "prod",
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_missing_exec_credential_plugin_is_named(tmp_path: Path) -> None:
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "runnerconf-no-such-plugin"}}
    kubeconfig = _kubeconfig(tmp_path / "kubeconfig", "https://kube.example.com", user)
    with pytest.raises(KubeError) as info:
        KubeDriver(_profile(kubeconfig, "prod"))
    message = str(info.value)
    assert "exec plugin 'runnerconf-no-such-plugin', which is not installed" in message
    assert "clusters.t.kube_context" in message and ". " not in message


def test_plain_http_to_another_machine_is_refused(tmp_path: Path) -> None:
    kubeconfig = _kubeconfig(
        tmp_path / "kubeconfig", "http://kube.example.com:8080", {"token": "abcdef123456"}
    )
    with pytest.raises(ConfigError, match=r"set clusters\.t\.allow_insecure_http = true"):
        KubeDriver(_profile(kubeconfig, "prod"))
    try:
        KubeDriver(_profile(kubeconfig, "prod", allow_insecure_http=True))  # no request is made yet
    finally:
        KNOWN.clear()


def test_a_redirect_is_refused_and_nothing_reaches_its_target(tmp_path: Path) -> None:
    seen: list[dict[str, str]] = []
    other_router = Router()
    other_router.add("GET", "/.*", lambda r: (seen.append(r.headers), Response(200, {}))[1])
    other = LoopbackServer(other_router, lambda p: Response(404)).start()
    router = Router()
    router.add("GET", "/api/v1/.*", lambda r: Response(302, b"", {"Location": f"{other.url}{r.path}"}))
    fake = LoopbackServer(router, lambda p: Response(404)).start()
    try:
        kubeconfig = _kubeconfig(tmp_path / "kubeconfig", fake.url, {"token": "redirect-token-123"})
        driver = KubeDriver(_profile(kubeconfig, "prod"))
        with pytest.raises(KubeError, match=r"redirected a request to .* and the credentials were not sent"):
            driver.list_pods("project.runner.gitlab.com/id=1")
        assert seen == []
    finally:
        fake.stop()
        other.stop()
        KNOWN.clear()
