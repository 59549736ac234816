"""The API faults a run must survive with its verdicts unchanged: `watch-expired` and `api-flaky`.

A run's faults travel with its pipeline (RUNNERCONF_LOCAL_FAULTS). GitLab sees them on the pipeline and tells
`RunFaults` the pipeline's job ids; the Kubernetes API finds a pod's run by the job id annotation the runner
puts on it. So a fault is in force on the Kubernetes side while a pod of a faulted run lives, and on the
GitLab side while a faulted pipeline is unfinished. Each fault comes every few requests or changes (counted,
not drawn), so a run certainly meets it and the next attempt certainly passes; every injection is counted in
`injected` and written to the cluster's log as a "runnerconf local: fault" line.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from pytest_runnerconf.local.httpserve import Response

WATCH_EXPIRED = "watch-expired"
API_FLAKY = "api-flaky"
EXPIRE_EVERY = 25  # changes of a faulted run's pods between two watch-cache resets (a few per run)
# While a faulted run's pods live, its first three Kubernetes lists fail in a row (500, 503, a truncated
# body: one read and its retries, so a run surely meets all three, and the read's fourth attempt succeeds);
# then every 4th list or watch fails in turn. Watches are not among the first three: a run's watch may
# reconnect only once or twice, and a list's retries come at once.
KUBE_FLAKY_EVERY = 4
KUBE_FLAKY_FIRST = 3
GITLAB_FLAKY_EVERY = 5  # GitLab reads between two 502s
RATE_LIMIT_AT = 3  # the 3rd GitLab read while a faulted pipeline runs is answered 429 (once per pipeline)
RATE_LIMIT_WAIT_S = 2  # how far ahead the 429's Retry-After date lies
LOG_PREFIX = "runnerconf local: fault"
# What nginx in front of GitLab answers when the application is down for a moment.
BAD_GATEWAY = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1>"
    "</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


def log_to_stderr(line: str) -> None:
    """The cluster's stderr is its log file (cluster.log), where tests count the injections."""
    print(line, file=sys.stderr, flush=True)


JOB_ID_ANNOTATION = "job.runner.gitlab.com/id"  # on every pod the runner makes for a job


class RunFaults:
    """job id -> the faults its pipeline asked for; GitLab adds each pipeline's jobs as it creates them.

    A plain registry on purpose: the Kubernetes store consults it under its own lock, so it must not reach
    into GitLab's state (and its lock) from there.
    """

    def __init__(self) -> None:
        self._by_job: dict[int, frozenset[str]] = {}
        self._lock = threading.Lock()

    def add(self, job_ids: list[int], faults: frozenset[str]) -> None:
        if faults:
            with self._lock:
                self._by_job.update(dict.fromkeys(job_ids, faults))

    def of_pod(self, pod: dict[str, Any]) -> frozenset[str]:
        value = str(((pod.get("metadata") or {}).get("annotations") or {}).get(JOB_ID_ANNOTATION, ""))
        if not value.isdigit():
            return frozenset()
        with self._lock:
            return self._by_job.get(int(value), frozenset())


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


@dataclass
class KubeFaults:
    """The Kubernetes API's side: watch-cache resets, keep-alives, failed lists and watches."""

    own: frozenset[str] = frozenset()  # the cluster's own faults (`runnerconf local up --faults`)
    runs: RunFaults = field(default_factory=RunFaults)
    log: Callable[[str], None] = log_to_stderr
    injected: Counter[str] = field(default_factory=Counter)
    _live: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)  # faulted pods alive
    _changes: int = 0
    _requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _inject(self, fault: str, what: str, detail: str) -> None:
        with self._lock:
            self.injected[what] += 1
        self.log(f"{LOG_PREFIX} {fault}: {detail}")

    def in_force(self, fault: str) -> bool:
        with self._lock:
            return fault in self.own or any(fault in f for f in self._live.values())

    def on_record(self, type_: str, kind: str, obj: dict[str, Any]) -> bool:
        """The store's expire_history hook: True every EXPIRE_EVERY changes of a watch-expired run's pods."""
        if kind != "Pod":
            return False
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        faults = self.own | self.runs.of_pod(obj)
        with self._lock:
            if type_ == "DELETED":
                self._live.pop(key, None)
            elif faults:
                self._live[key] = faults
            if WATCH_EXPIRED not in faults:
                return False
            self._changes += 1
            if self._changes % EXPIRE_EVERY:
                return False
        self._inject(
            WATCH_EXPIRED,
            "history-reset",
            f"watch history reset at resourceVersion {meta.get('resourceVersion')}; watches behind it get 410",
        )
        return True

    def keep_alive(self, obj: dict[str, Any]) -> bool:
        """Whether a blank keep-alive line follows this watch event (an event about a watch-expired pod)."""
        if WATCH_EXPIRED not in self.own | self.runs.of_pod(obj):
            return False
        with self._lock:
            self.injected["keep-alive"] += 1
        return True

    def failed_request(self, path: str, watch: bool) -> Response | str | None:
        """api-flaky: some lists/watches answer 500, 503 or (the string "truncated") a body cut short, in
        turn (see KUBE_FLAKY_FIRST); None: answer as usual."""
        if not self.in_force(API_FLAKY):
            return None
        with self._lock:
            if watch and self._requests < KUBE_FLAKY_FIRST:
                return None
            self._requests += 1
            n = self._requests
        if n <= KUBE_FLAKY_FIRST:
            turn = n - 1
        elif (n - KUBE_FLAKY_FIRST) % KUBE_FLAKY_EVERY:
            return None
        else:
            turn = (n - KUBE_FLAKY_FIRST) // KUBE_FLAKY_EVERY - 1
        verb = "watch" if watch else "list"
        match turn % 3:
            case 0:
                self._inject(API_FLAKY, "kube-500", f"answered 500 to the {verb} {path}")
                message = "Internal error occurred: etcdserver: request timed out"
                return Response(500, _status(500, "InternalError", message))
            case 1:
                self._inject(API_FLAKY, "kube-503", f"answered 503 to the {verb} {path}")
                message = "the server is currently unable to handle the request"
                return Response(503, _status(503, "ServiceUnavailable", message), {"Retry-After": "1"})
            case _:
                self._inject(API_FLAKY, "kube-truncated", f"cut short the body of the {verb} {path}")
                return "truncated"


def truncated(body: bytes) -> bytes:
    """The first half of a body: what a client reads when a proxy drops the rest."""
    return body[: max(1, len(body) // 2)]


class GitLabFaults:
    """GitLab's side of api-flaky: 502 to every few reads, 429 with an HTTP-date Retry-After once."""

    def __init__(
        self,
        faulted: Callable[[], int | None],
        own: frozenset[str] = frozenset(),
        log: Callable[[str], None] = log_to_stderr,
    ) -> None:
        self._faulted = faulted  # the id of an unfinished pipeline that asked for api-flaky, or None
        self._own = own
        self.log = log
        self.injected: Counter[str] = Counter()
        self._reads = 0
        self._limited: set[int] = set()
        self._lock = threading.Lock()

    def read(self, method: str, path: str) -> Response | None:
        """The answer a faulted read gets instead of its own, or None."""
        if method != "GET":
            return None
        pipeline = 0 if API_FLAKY in self._own else self._faulted()
        if pipeline is None:
            return None
        with self._lock:
            self._reads += 1
            n = self._reads
            limit = n >= RATE_LIMIT_AT and pipeline not in self._limited
            if limit:
                self._limited.add(pipeline)
            what = "gitlab-429" if limit else "gitlab-502" if n % GITLAB_FLAKY_EVERY == 0 else ""
            if what:
                self.injected[what] += 1
        if what == "gitlab-429":
            retry_at = formatdate(time.time() + RATE_LIMIT_WAIT_S, usegmt=True)
            self.log(f"{LOG_PREFIX} {API_FLAKY}: answered 429 (Retry-After: {retry_at}) to GET {path}")
            return Response(429, "Retry later\n", {"Retry-After": retry_at}, content_type="text/plain")
        if what == "gitlab-502":
            self.log(f"{LOG_PREFIX} {API_FLAKY}: answered 502 to GET {path}")
            return Response(502, BAD_GATEWAY, content_type="text/html")
        return None
