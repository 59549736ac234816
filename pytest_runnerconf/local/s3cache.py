"""The distributed cache of the local cluster: an S3-compatible server and the runner's view of it.

The server is moto's (its Werkzeug server mode, in a thread of the cluster process): a maintained S3
implementation from PyPI that speaks the real protocol (path-style buckets, presigned URLs, ETags, 404 for
a missing key), so the emulated helper moves cache.zip over HTTP exactly as the real one does, and nothing
is hand-made to look like S3. The runner's side follows gitlab-runner v18.11:

- the object name, cache/cache.go GetAdapter: path.Join(Path, "runner/<short token>" unless Shared,
  "project", <project id>, <key>);
- presigned GET/PUT URLs for it, cache/s3/adapter.go (minio-go PresignHeader, SigV4, path style for a
  non-AWS host, scheme from Insecure);
- the URL the helper prints, helpers/url/clean_url.go CleanURL: no user info, query or fragment (the
  signature and the access key id stay out of the trace).
"""

from __future__ import annotations

import logging
import posixpath
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from pytest_runnerconf.local.errors import LocalStartError
from pytest_runnerconf.local.runner_config import CacheSection

DEFAULT_REGION = "us-east-1"  # minio-go's location when BucketLocation is unset
REQUEST_TIMEOUT_S = 30.0


class S3Error(LocalStartError):
    """The local S3 server could not be started or its bucket made."""


def object_name(cache: CacheSection, short_token: str, project_id: int | str, key: str) -> str | None:
    """cache.GetAdapter's object path; None where it gives no adapter (an empty key, a key leaving the
    project's prefix such as "../x")."""
    if not key:
        return None
    namespace = "" if cache.shared else posixpath.join("runner", short_token)
    base = posixpath.normpath(posixpath.join(cache.path, namespace, "project", str(project_id)))
    full = posixpath.normpath(posixpath.join(base, key))
    if not full.startswith(base + "/"):
        return None
    return full


def endpoint(cache: CacheSection) -> str:
    assert cache.s3 is not None
    scheme = "http" if cache.s3.insecure else "https"
    return f"{scheme}://{cache.s3.server_address}"


def presigned_url(cache: CacheSection, method: str, name: str, expires_s: int) -> str:
    """A SigV4 presigned URL for METHOD (GET, PUT, HEAD) on the object, as the runner hands the helper."""
    import boto3
    from botocore.config import Config

    s3 = cache.s3
    assert s3 is not None
    client = boto3.client(
        "s3",
        endpoint_url=endpoint(cache),
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
        region_name=s3.bucket_location or DEFAULT_REGION,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    operation = {"GET": "get_object", "PUT": "put_object", "HEAD": "head_object"}[method]
    url: str = client.generate_presigned_url(
        operation, Params={"Bucket": s3.bucket_name, "Key": name}, ExpiresIn=expires_s, HttpMethod=method
    )
    return url


def clean_url(url: str) -> str:
    """url_helpers.CleanURL: the URL without user info, query and fragment."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass(frozen=True)
class Fetched:
    status: int
    body: bytes = b""
    etag: str = ""


def http_get(url: str) -> Fetched:
    """The extractor's GET of the presigned URL; a transport error is status 0."""
    try:
        with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_S) as resp:
            return Fetched(resp.status, resp.read(), resp.headers.get("ETag", ""))
    except urllib.error.HTTPError as exc:
        return Fetched(exc.code)
    except (urllib.error.URLError, OSError):
        return Fetched(0)


def http_put(url: str, data: bytes, headers: dict[str, str]) -> int:
    """The archiver's PUT of cache.zip (Content-Type application/octet-stream unless given)."""
    request = urllib.request.Request(url, data=data, method="PUT")
    request.add_header("Content-Type", "application/octet-stream")
    for key, value in headers.items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0


class S3Server:
    """moto's S3 server on HOST:<free port> with the buckets BUCKETS made (what a cluster's runners name)."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.port = _free_port(host)
        self._server: Any = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, buckets: list[str], access_key: str, secret_key: str) -> S3Server:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as exc:  # the `local` extra brings moto; a bare install does not
            raise S3Error(
                f"the local cluster's S3 cache server needs moto ({exc}); install pytest-runnerconf[local]"
            ) from None
        # Werkzeug logs every request to stderr, presigned query strings (access key id, signature) included.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        self._server.start()
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=f"http://{self.address}",
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=DEFAULT_REGION,
        )
        try:
            for bucket in sorted(set(buckets)):
                client.create_bucket(Bucket=bucket)
        except Exception as exc:
            self.stop()
            raise S3Error(
                f"the local S3 server at {self.address} refused to create its bucket: {exc}"
            ) from None
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
