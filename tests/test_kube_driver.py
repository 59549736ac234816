"""Least privilege on the Kubernetes side (Secret metadata only, RBAC refusals skip, no redirects, no clear
text), and a watch and reads that survive what real API servers do (410 Expired, 5xx, keep-alives, truncated
bodies, dropped and stalled connections).

Against the local Kubernetes API in-process (loopback, no Docker) and scripted loopback fakes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_runnerconf import kube_driver, rbac
from pytest_runnerconf.errors import ConfigError, KubeError
from pytest_runnerconf.kube_driver import (
    METADATA_LIST_ACCEPT,
    PROJECT_ID_LABEL,
    KubeAPIFailing,
    KubeDriver,
    PodEvent,
    PodWatch,
    SecretsForbidden,
    WatchFailed,
)
from pytest_runnerconf.local import apifaults
from pytest_runnerconf.local.httpserve import LoopbackServer, Request, Response, Router
from pytest_runnerconf.local.kstore import KubeStore
from pytest_runnerconf.local.kube_api import KubeAPI, write_kubeconfig
from pytest_runnerconf.profile import Profile, profile_from_table
from pytest_runnerconf.scrub import KNOWN, scrub_text

NS = "ci"
POD_SELECTOR = "pod"
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
    tokens = {
        "least-token-000001": rbac.grants(["secrets"]),
        "no-secrets-token-02": rbac.grants([]),
        # pods listed but not watched, no events: two grants missing, to be named together
        "half-token-00000003": frozenset({"list pods", "list secrets", "watch secrets"}),
    }
    api = KubeAPI(store, tokens)
    url = api.start().url
    contexts = {
        "least": "least-token-000001",
        "no-secrets": "no-secrets-token-02",
        "half": "half-token-00000003",
    }
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
        assert call.__self__.api_client.default_headers["Accept"] == METADATA_LIST_ACCEPT
        assert kwargs.get("field_selector") == "type=kubernetes.io/dockercfg"
        body = raw(call, *args, **kwargs)
        bodies.append(body)
        return body

    monkeypatch.setattr(driver, "_raw", spy)
    found, version = driver.list_secret_meta("-project-42-")
    assert version, "the list's resourceVersion, to watch from"
    assert [s["name"] for s in found] == [POD.replace("x1y2z3w4", "s3cr3t00")]
    assert found[0]["owner_references"][0]["name"] == POD
    (body,) = bodies
    assert body["kind"] == "PartialObjectMetadataList"
    assert all(set(item) == {"kind", "apiVersion", "metadata"} for item in body["items"])
    assert DOCKERCFG not in repr(body) and "database-password" not in repr(body), "no data, no other types"


def test_no_rbac_for_secrets_is_a_reason_to_skip(kube: tuple[KubeStore, Path]) -> None:
    _store, kubeconfig = kube
    driver = KubeDriver(_profile(kubeconfig, "no-secrets"))
    with pytest.raises(
        SecretsForbidden, match=r"needs `list` and `watch` on secrets \(see `runnerconf rbac`\)"
    ):
        driver.list_secret_meta("-project-42-")
    assert driver.list_pods("project.runner.gitlab.com/id=42")["items"] == []  # the rest is granted
    watch = driver.watch_secrets("")
    with watch:
        failed = watch.events.get(timeout=10)
    assert isinstance(failed, WatchFailed) and failed.resource == "secrets"
    assert isinstance(failed.error, SecretsForbidden), failed.error


def _next(watch: PodWatch, want: str) -> PodEvent:
    """The watch's next event of type WANT (earlier ones, such as the initial ADDED, are passed over)."""
    while True:
        item = watch.events.get(timeout=10)
        assert not isinstance(item, WatchFailed), item.error
        if item.type == want:
            return item


def test_the_secret_watch_sends_metadata_only_and_times_each_deletion(kube: tuple[KubeStore, Path]) -> None:
    store, kubeconfig = kube
    driver = KubeDriver(_profile(kubeconfig, "least"))
    _found, version = driver.list_secret_meta("-project-42-")
    name = POD.replace("x1y2z3w4", "n3w00000")
    with driver.watch_secrets(version) as watch:
        store.create(
            {
                "kind": "Secret",
                "metadata": {"name": name, "namespace": NS},
                "type": "kubernetes.io/dockercfg",
                "data": {".dockercfg": DOCKERCFG},
            }
        )
        added = _next(watch, "ADDED")
        store.create({"kind": "Secret", "metadata": {"name": "other", "namespace": NS}, "type": "Opaque"})
        store.delete("Secret", NS, name)
        deleted = _next(watch, "DELETED")
    assert added.resource == deleted.resource == "secrets"
    assert added.name == deleted.name == name, "the Opaque Secret is not selected"
    assert added.pod["kind"] == "PartialObjectMetadata" and set(added.pod) == {
        "kind",
        "apiVersion",
        "metadata",
    }
    assert DOCKERCFG not in repr(added) + repr(deleted)
    assert added.time <= deleted.time


def test_a_secret_watch_answered_with_full_objects_is_refused(kube: tuple[KubeStore, Path]) -> None:
    store, kubeconfig = kube
    driver = KubeDriver(_profile(kubeconfig, "least"))
    _found, version = driver.list_secret_meta("-project-42-")
    # A server (or proxy) that ignores the Accept header: the watch sends each Secret whole.
    driver._meta_watch = driver._core
    with driver.watch_secrets(version) as watch:
        store.create(
            {
                "kind": "Secret",
                "metadata": {"name": POD.replace("x1y2z3w4", "full0000"), "namespace": NS},
                "type": "kubernetes.io/dockercfg",
                "data": {".dockercfg": DOCKERCFG},
            }
        )
        failed = watch.events.get(timeout=10)
    assert isinstance(failed, WatchFailed), failed
    assert "answered a metadata-only Secret watch with 'Secret'" in str(failed.error)
    assert DOCKERCFG not in repr(failed)


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


# ---------------------------------------------------------------- the watch and the reads survive faults


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Back-offs of milliseconds: the tests count retries, they need not wait them out."""
    monkeypatch.setattr(kube_driver, "RETRY_BASE_S", 0.01)
    monkeypatch.setattr(kube_driver, "RETRY_MAX_S", 0.05)


def _line(type_: str, name: str, rv: int, phase: str = "Pending") -> bytes:
    pod = {
        "metadata": {"name": name, "namespace": NS, "resourceVersion": str(rv)},
        "status": {"phase": phase},
    }
    return json.dumps({"type": type_, "object": pod}).encode() + b"\n"


def _error_line(code: int, reason: str) -> bytes:
    status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason}
    return json.dumps({"type": "ERROR", "object": status}).encode() + b"\n"


def _pod_list(rv: int, *pods: tuple[str, int, str]) -> dict[str, Any]:
    items = [
        {"metadata": {"name": n, "namespace": NS, "resourceVersion": str(v)}, "status": {"phase": p}}
        for n, v, p in pods
    ]
    return {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": str(rv)}, "items": items}


def _idle(stop: threading.Event, seconds: float = 1.0) -> Iterator[bytes]:
    """A watch window with nothing to say: open until it times out (as the server's timeoutSeconds would)."""
    stop.wait(seconds)
    yield b""


@dataclass
class FakeKube:
    """A scripted Kubernetes API: each list and watch request takes the next answer of its script.

    When a script runs out, lists answer an empty PodList and watches stay idle for a second; every request's
    query is kept, so a test can tell from where each watch resumed.
    """

    lists: list[Callable[[Request], Response]] = field(default_factory=list)
    watches: list[Callable[[Request], Response]] = field(default_factory=list)
    seen: list[dict[str, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def handle(self, request: Request) -> Response:
        watching = request.query.get("watch", "").lower() in ("true", "1")
        self.seen.append({"kind": "watch" if watching else "list", **request.query})
        script = self.watches if watching else self.lists
        if script:
            return script.pop(0)(request)
        if watching:
            return Response(200, _idle(self.stop))
        return Response(200, _pod_list(1))

    def watch_versions(self) -> list[str | None]:
        return [q.get("resourceVersion") for q in self.seen if q["kind"] == "watch"]


def _stream(*chunks: bytes) -> Callable[[Request], Response]:
    return lambda r: Response(200, iter(chunks))


def _answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Callable[[Request], Response]:
    return lambda r: Response(status, body, headers or {})


@pytest.fixture
def fake(tmp_path: Path, fast_retries: None) -> Iterator[tuple[FakeKube, KubeDriver]]:
    script = FakeKube()
    router = Router()
    router.add("GET", f"/api/v1/namespaces/{NS}/pods", script.handle)
    server = LoopbackServer(router, lambda p: Response(404)).start()
    kubeconfig = _kubeconfig(tmp_path / "kubeconfig", server.url, {"token": "fake-kube-token-01"})
    try:
        yield script, KubeDriver(_profile(kubeconfig, "prod"))
    finally:
        script.stop.set()
        server.stop()
        KNOWN.clear()


def _take(watch: PodWatch, count: int, timeout_s: float = 15.0) -> list[PodEvent]:
    """The next COUNT pod events (a WatchFailed is raised as its error)."""
    got: list[PodEvent] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count:
        item = watch.events.get(timeout=max(0.01, deadline - time.monotonic()))
        if isinstance(item, WatchFailed):
            raise item.error
        got.append(item)
    return got


def _failure(watch: PodWatch, timeout_s: float = 15.0) -> WatchFailed:
    deadline = time.monotonic() + timeout_s
    while True:
        item = watch.events.get(timeout=max(0.01, deadline - time.monotonic()))
        if isinstance(item, WatchFailed):
            return item


def _seen(events: list[PodEvent]) -> list[tuple[str, str, str]]:
    return [(e.type, e.name, e.pod["metadata"]["resourceVersion"]) for e in events]


def test_blank_keep_alives_and_bookmarks_are_no_events_and_the_watch_resumes_from_the_bookmark(
    fake: tuple[FakeKube, KubeDriver],
) -> None:
    script, driver = fake
    bookmark = json.dumps({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "7"}}}).encode()
    script.watches += [
        _stream(b"\n", _line("ADDED", "a", 2), b"\n\n", bookmark + b"\n", b"\n"),
        _stream(_line("MODIFIED", "a", 8, "Running")),
    ]
    with driver.watch_pods("x=1", "1") as watch:
        events = _take(watch, 2)
    assert _seen(events) == [("ADDED", "a", "2"), ("MODIFIED", "a", "8")]
    assert script.watch_versions()[:2] == ["1", "7"]
    assert driver.retries == {}, "keep-alives and bookmarks are not faults"


def test_an_error_500_event_reconnects_from_the_last_resource_version(
    fake: tuple[FakeKube, KubeDriver],
) -> None:
    script, driver = fake
    script.watches += [
        _stream(_line("ADDED", "a", 2), _error_line(500, "InternalError")),
        _answer(503, {"kind": "Status", "code": 503}),  # reopening fails once more
        _stream(_line("MODIFIED", "a", 3, "Running")),
    ]
    with driver.watch_pods("x=1", "1") as watch:
        events = _take(watch, 2)
    assert _seen(events) == [("ADDED", "a", "2"), ("MODIFIED", "a", "3")]
    assert script.watch_versions()[:3] == ["1", "2", "2"]
    assert not [q for q in script.seen if q["kind"] == "list"], "a 500 is no reason to relist"
    assert driver.retries == {"watch broken": 2}


def test_an_expired_watch_relists_and_resumes_without_losing_or_repeating_a_state(
    fake: tuple[FakeKube, KubeDriver],
) -> None:
    script, driver = fake
    # Seen: a@2 and b@3. Meanwhile (lost with the expired window): a changed, b was deleted, c appeared.
    script.watches += [
        _stream(_line("ADDED", "a", 2), _line("ADDED", "b", 3), _error_line(410, "Expired")),
        _stream(_line("MODIFIED", "c", 11, "Running")),
    ]
    script.lists.append(_answer(200, _pod_list(10, ("a", 9, "Running"), ("c", 10, "Pending"))))
    with driver.watch_pods("x=1", "1") as watch:
        events = _take(watch, 6)
    assert _seen(events) == [
        ("ADDED", "a", "2"),
        ("ADDED", "b", "3"),
        ("DELETED", "b", "3"),  # vanished while the watch was expired: its last known state
        ("RELISTED", "a", "9"),
        ("RELISTED", "c", "10"),
        ("MODIFIED", "c", "11"),
    ]
    assert script.watch_versions()[:2] == ["1", "10"], "the watch resumes from the list's resourceVersion"
    assert [e.relisted for e in events] == [False, False, True, True, True, False]
    assert driver.retries == {"watch 410": 1}


def test_a_relist_queues_only_pods_whose_state_changed(fake: tuple[FakeKube, KubeDriver]) -> None:
    script, driver = fake
    script.watches += [
        _stream(_line("ADDED", "a", 2), _line("ADDED", "b", 3)),
        _answer(410, {"kind": "Status", "code": 410, "reason": "Expired"}),  # expired when reopened
        _stream(_line("DELETED", "a", 12)),
    ]
    script.lists.append(_answer(200, _pod_list(11, ("a", 2, "Pending"), ("b", 5, "Running"))))
    with driver.watch_pods("x=1", "1") as watch:
        events = _take(watch, 4)
    assert _seen(events) == [
        ("ADDED", "a", "2"),
        ("ADDED", "b", "3"),
        ("RELISTED", "b", "5"),
        ("DELETED", "a", "12"),
    ]


def test_a_dropped_connection_and_a_truncated_event_resume_from_the_last_event(
    fake: tuple[FakeKube, KubeDriver],
) -> None:
    script, driver = fake

    def dies_mid_event() -> Iterator[bytes]:
        yield _line("ADDED", "a", 2)
        yield b'{"type":"MODIFIED","object":{"metadata":{"na'
        raise RuntimeError("the proxy went away")  # the server drops the connection: no last chunk

    script.watches += [
        lambda r: Response(200, dies_mid_event()),
        _stream(_line("MODIFIED", "a", 3), b'{"type":"MODIFIED","obj'),  # ends cleanly, mid-line
        _stream(_line("MODIFIED", "a", 4, "Running")),
    ]
    with driver.watch_pods("x=1", "1") as watch:
        events = _take(watch, 3)
    assert _seen(events) == [("ADDED", "a", "2"), ("MODIFIED", "a", "3"), ("MODIFIED", "a", "4")]
    assert script.watch_versions()[:3] == ["1", "2", "3"]
    assert driver.retries == {"watch broken": 1}, "a truncated last line is a broken window"


def test_a_slow_watch_past_its_read_timeout_is_reopened(
    fake: tuple[FakeKube, KubeDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    script, driver = fake
    monkeypatch.setattr(kube_driver, "WATCH_WINDOW_S", 1)
    monkeypatch.setattr(kube_driver, "REQUEST_TIMEOUT_S", 0.5)

    def stalls() -> Iterator[bytes]:
        yield _line("ADDED", "a", 2)
        script.stop.wait(5)  # silent for longer than the client reads (1.5 s)
        yield _line("MODIFIED", "a", 3)

    script.watches += [lambda r: Response(200, stalls()), _stream(_line("MODIFIED", "a", 3, "Running"))]
    started = time.monotonic()
    with driver.watch_pods("x=1", "1") as watch:
        events = _take(watch, 2)
    assert _seen(events) == [("ADDED", "a", "2"), ("MODIFIED", "a", "3")]
    assert time.monotonic() - started < 4.5, "the stalled window was given up at the read timeout"
    assert driver.retries == {"watch broken": 1}


def test_a_watch_that_keeps_failing_ends_with_one_sentence(fake: tuple[FakeKube, KubeDriver]) -> None:
    script, driver = fake
    script.watches += [_answer(500, {"kind": "Status", "code": 500})] * 20
    with driver.watch_pods("x=1", "1") as watch:
        failed = _failure(watch)
    error = failed.error
    assert isinstance(error, KubeAPIFailing) and error.cause == "api-error"
    assert str(error) == (
        f"the pod watch on namespace {NS} failed 5 times in a row (last: 500 Internal Server Error); "
        f"the Kubernetes API at {driver.host} is not serving watches"
    )


def test_a_watch_that_keeps_expiring_after_relists_ends_with_one_sentence(
    fake: tuple[FakeKube, KubeDriver],
) -> None:
    script, driver = fake
    script.watches += [_stream(_error_line(410, "Expired"))] * 20
    with driver.watch_pods("x=1", "1") as watch:
        failed = _failure(watch)
    assert isinstance(failed.error, KubeAPIFailing)
    assert "expired 9 times in a row right after a fresh list" in str(failed.error)
    assert len([q for q in script.seen if q["kind"] == "list"]) == 8, "one relist per expiry, bounded"


def test_broken_windows_around_a_relist_are_not_in_a_row(fake: tuple[FakeKube, KubeDriver]) -> None:
    """A watch cache that expires behind a proxy that cuts bodies: four broken windows, an expiry and its
    relist, four broken windows again, then the event. Eight broken windows, never five in a row."""
    script, driver = fake
    broken = [_answer(500, {"kind": "Status", "code": 500})] * 4
    script.watches += [*broken, _stream(_error_line(410, "Expired")), *broken]
    script.watches.append(_stream(_line("MODIFIED", "a", 9, "Running")))
    script.lists.append(_answer(200, _pod_list(8, ("a", 8, "Running"))))
    with driver.watch_pods("x=1", "1") as watch:
        events = _take(watch, 2)
    assert [(e.type, e.relisted) for e in events] == [("RELISTED", True), ("MODIFIED", False)]
    assert driver.retries == {"watch broken": 8, "watch 410": 1}


def test_a_list_answering_500_then_a_truncated_body_is_retried(fake: tuple[FakeKube, KubeDriver]) -> None:
    script, driver = fake
    whole = json.dumps(_pod_list(5, ("a", 4, "Running"))).encode()
    script.lists += [
        _answer(500, {"kind": "Status", "code": 500}),
        _answer(200, whole[: len(whole) // 2]),
        _answer(503, {"kind": "Status", "code": 503}, {"Retry-After": "0"}),
        _answer(200, whole),
    ]
    body = driver.list_pods("x=1")
    assert [p["metadata"]["name"] for p in body["items"]] == ["a"]
    assert driver.retries == {"500": 1, "malformed": 1, "503": 1}


def test_a_list_that_keeps_failing_is_one_api_error_sentence(fake: tuple[FakeKube, KubeDriver]) -> None:
    script, driver = fake
    script.lists += [_answer(503, {"kind": "Status", "code": 503})] * 4 + [_answer(200, _pod_list(1))]
    with pytest.raises(KubeAPIFailing) as info:
        driver.list_pods("x=1")
    assert info.value.cause == "api-error"
    assert str(info.value) == (
        f"the Kubernetes API at {driver.host} failed to list pods in namespace {NS} 4 times in a row "
        "(last: 503 Service Unavailable); check the API server's health"
    )
    script.lists.clear()
    script.lists += [_answer(200, b"{not json")] * 4
    with pytest.raises(
        KubeAPIFailing, match=r"answered 4 requests to list pods in namespace ci with a malformed"
    ):
        driver.list_pods("x=1")


def test_a_refusal_is_not_retried(fake: tuple[FakeKube, KubeDriver]) -> None:
    script, driver = fake
    script.lists += [_answer(403, {"kind": "Status", "code": 403})]
    with pytest.raises(KubeError, match=r"no RBAC to list pods"):
        driver.list_pods("x=1")
    assert len(script.seen) == 1 and driver.retries == {}


# ---------------------------------------------------------------- the local API's faults, met by the driver


@pytest.fixture
def faulted(tmp_path: Path, fast_retries: None) -> Iterator[tuple[KubeStore, KubeAPI, KubeDriver]]:
    """The local Kubernetes API with runs' faults, as GitLab tells them: job 7 asked for watch-expired and
    api-flaky, job 8 for api-flaky, job 9 for none."""
    store = KubeStore()
    store.create({"kind": "Namespace", "metadata": {"name": NS}})
    api = KubeAPI(store, {"full-token-0000001": rbac.grants(["secrets"])})
    api.api_faults.log = lambda line: None
    api.run_faults.add([7], frozenset({"watch-expired", "api-flaky"}))
    api.run_faults.add([8], frozenset({"api-flaky"}))
    api.run_faults.add([9], frozenset())
    url = api.start().url
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url, {"full": "full-token-0000001"}, "full", NS)
    try:
        yield store, api, KubeDriver(_profile(kubeconfig, "full"))
    finally:
        api.stop()
        KNOWN.clear()


def _job_pod(name: str, job_id: int) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {PROJECT_ID_LABEL: "42"},
            "annotations": {"job.runner.gitlab.com/id": str(job_id)},
        },
        "spec": {"containers": [{"name": "build", "image": "alpine"}]},
        "status": {"phase": "Pending"},
    }


def _phase(store: KubeStore, name: str, phase: str) -> None:
    store.update("Pod", NS, name, lambda p: p.setdefault("status", {}).update(phase=phase))


def test_under_the_local_faults_the_watch_ends_with_the_stores_state(
    faulted: tuple[KubeStore, KubeAPI, KubeDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    """watch-expired and api-flaky on the local API: every pod's last state arrives, no state twice."""
    store, api, driver = faulted
    monkeypatch.setattr(apifaults, "EXPIRE_EVERY", 4)  # a few pods' worth of changes, not a run's
    selector = f"{PROJECT_ID_LABEL}=42"
    version, _gap = driver.preflight(selector)
    last: dict[str, str] = {}
    seen: list[tuple[str, str]] = []
    with driver.watch_pods(selector, version) as watch:

        def settle(until: Callable[[], bool]) -> None:
            deadline = time.monotonic() + 20
            while not until():
                item = watch.events.get(timeout=max(0.01, deadline - time.monotonic()))
                if isinstance(item, WatchFailed):
                    raise item.error
                rv = item.pod["metadata"]["resourceVersion"]
                assert (item.name, rv) not in seen or item.type == "DELETED", f"{item.name}@{rv} twice"
                seen.append((item.name, rv))
                last[item.name] = "gone" if item.type == "DELETED" else item.pod["status"]["phase"]

        for n in range(6):
            name = f"pod-{n}"
            store.create(_job_pod(name, 7))
            for phase in ("Running", "Succeeded"):
                _phase(store, name, phase)
                settle(lambda name=name, phase=phase: last.get(name) == phase)
            driver.list_pods(selector)  # the run's other reads meet api-flaky too
            if n % 2:
                store.delete("Pod", NS, name)
                settle(lambda name=name: last.get(name) == "gone")
    items, _ = store.list("Pod", NS)
    assert {k: v for k, v in last.items() if v != "gone"} == {
        p["metadata"]["name"]: "Succeeded" for p in items
    }
    injected = api.api_faults.injected
    assert injected["history-reset"] >= 2 and injected["keep-alive"] >= 10, injected
    assert injected["kube-500"] and injected["kube-503"] and injected["kube-truncated"], injected
    assert driver.retries.get("watch 410", 0) >= 1, driver.retries
    assert sum(driver.retries.values()) >= sum(v for k, v in injected.items() if k != "keep-alive")


def test_a_runs_api_faults_stay_with_its_pods(faulted: tuple[KubeStore, KubeAPI, KubeDriver]) -> None:
    store, api, driver = faulted
    for _ in range(10):
        driver.list_pods("")
    store.create(_job_pod("other-run", 9))
    for _ in range(10):
        driver.list_pods("")
    assert api.api_faults.injected == {} and driver.retries == {}
    store.create(_job_pod("flaky-run", 8))
    for _ in range(10):
        driver.list_pods("")
    injected = dict(api.api_faults.injected)
    assert set(injected) == {"kube-500", "kube-503", "kube-truncated"}, "all three within ten reads"
    assert sum(injected.values()) == sum(driver.retries.values()), (injected, driver.retries)
    store.delete("Pod", NS, "flaky-run")
    before = dict(api.api_faults.injected)
    for _ in range(10):
        driver.list_pods("")
    assert api.api_faults.injected == before, "no fault once the faulted run's pods are gone"


def test_a_list_whose_connection_drops_mid_body_is_retried(fake: tuple[FakeKube, KubeDriver]) -> None:
    script, driver = fake
    whole = json.dumps(_pod_list(5, ("a", 4, "Running"))).encode()

    def dies_mid_body() -> Iterator[bytes]:
        yield whole[:20]
        raise RuntimeError("the proxy went away")  # no last chunk: the client sees the connection end

    script.lists += [lambda r: Response(200, dies_mid_body()), _answer(200, whole)]
    assert [p["metadata"]["name"] for p in driver.list_pods("x=1")["items"]] == ["a"]
    assert driver.retries == {"dropped": 1}


def test_windows_that_deliver_before_expiring_are_not_expiries_in_a_row(
    fake: tuple[FakeKube, KubeDriver],
) -> None:
    """Each window delivers an event, then expires: a relist at once every time, never a give-up."""
    script, driver = fake
    rounds = kube_driver.MAX_EXPIRIES + 4
    for n in range(rounds):
        script.watches.append(_stream(_line("MODIFIED", "a", 10 * n + 2), _error_line(410, "Expired")))
        script.lists.append(_answer(200, _pod_list(10 * n + 3, ("a", 10 * n + 2, "Running"))))
    with driver.watch_pods("x=1", "1") as watch:
        events = _take(watch, rounds)
    assert [e.type for e in events] == ["MODIFIED"] * rounds, "the relists found nothing new"
    assert driver.retries == {"watch 410": rounds}


def test_a_list_slower_than_the_read_timeout_is_asked_again(
    fake: tuple[FakeKube, KubeDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    script, driver = fake
    # Whole seconds: kubernetes 29 ignores a float request timeout (the driver's own is an int).
    monkeypatch.setattr(kube_driver, "REQUEST_TIMEOUT_S", 1)

    def slow(request: Request) -> Response:
        script.stop.wait(2.5)  # the server's own slowness: the client gives up after a second
        return Response(200, _pod_list(2, ("a", 2, "Running")))

    script.lists += [slow, _answer(200, _pod_list(3, ("a", 3, "Running")))]
    assert driver.list_pods("x=1")["metadata"]["resourceVersion"] == "3"
    assert driver.retries == {"timeout": 1}


def test_preflight_asks_for_every_grant_and_names_all_that_are_missing(kube: tuple[KubeStore, Path]) -> None:
    _store, kubeconfig = kube
    rules = rbac.rules(["secrets"])
    version, gap = KubeDriver(_profile(kubeconfig, "least")).preflight(POD_SELECTOR, rules)
    assert version and gap == "", "the generated Role is enough"
    _version, gap = KubeDriver(_profile(kubeconfig, "no-secrets")).preflight(POD_SELECTOR, rules)
    assert gap.startswith("no RBAC to list or watch secrets in namespace ci;"), gap
    with pytest.raises(KubeError) as info:
        KubeDriver(_profile(kubeconfig, "half")).preflight(POD_SELECTOR, rules)
    sentence = str(info.value)
    assert sentence.startswith("no RBAC to watch pods, list events in namespace ci "), sentence
    assert "clusters.t.kubeconfig and clusters.t.kube_context" in sentence and ". " not in sentence
    assert "secrets" not in sentence.split("(what each is for")[0], "a Secret grant only skips its check"


def test_runner_config_is_one_get_of_the_named_configmap(kube: tuple[KubeStore, Path]) -> None:
    """runner_config = configmap:...: read with `get` on that ConfigMap; 404 and 403 name what to fix; the
    preflight asks the review for exactly that object."""
    from pytest_runnerconf.runner_config import ConfigMapUnreadable

    store, kubeconfig = kube
    store.create(
        {
            "kind": "ConfigMap",
            "metadata": {"name": "gitlab-runner", "namespace": NS},
            "data": {"config.toml": '[[runners]]\n  executor = "kubernetes"\n'},
        }
    )
    cm = (NS, "gitlab-runner")
    least = KubeDriver(_profile(kubeconfig, "least"))
    with pytest.raises(ConfigMapUnreadable) as info:
        least.read_configmap(*cm)  # the suite's Role without the runner_config rule
    assert str(info.value) == (
        "the identity of clusters.t.kubeconfig and clusters.t.kube_context may not get it (403); grant `get` on "
        "configmaps named gitlab-runner in namespace ci (`runnerconf rbac` prints the rule)"
    )
    with pytest.raises(KubeError) as kinfo:
        least.preflight(POD_SELECTOR, rbac.rules(["secrets"], cm))
    assert str(kinfo.value).startswith("no RBAC to get configmaps gitlab-runner in namespace ci (asked by")


def test_runner_config_configmap_read_and_not_found(tmp_path: Path) -> None:
    from pytest_runnerconf.runner_config import ConfigMapUnreadable

    store = KubeStore()
    store.create({"kind": "Namespace", "metadata": {"name": NS}})
    store.create(
        {
            "kind": "ConfigMap",
            "metadata": {"name": "gitlab-runner", "namespace": NS},
            "data": {"config.toml": "concurrent = 1\n"},
        }
    )
    api = KubeAPI(store, {"cm-token-0000000001": rbac.grants(["secrets"], (NS, "gitlab-runner"))})
    url = api.start().url
    try:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url, {"cm": "cm-token-0000000001"}, "cm", NS)
        driver = KubeDriver(_profile(kubeconfig, "cm"))
        assert driver.read_configmap(NS, "gitlab-runner") == {"config.toml": "concurrent = 1\n"}
        with pytest.raises(ConfigMapUnreadable) as info:
            driver.read_configmap(NS, "runner")
        assert str(info.value).startswith(f"it does not exist (404 from {url}); check the namespace and name")
        driver.preflight(POD_SELECTOR, rbac.rules(["secrets"], (NS, "gitlab-runner")))  # the rule is enough
    finally:
        api.stop()
