"""The local distributed cache: the runner's object path, the helper's cache.zip, the S3 server round trip."""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Iterator

import pytest

from pytest_runnerconf.local.archives import zip_entries, zip_to_tar
from pytest_runnerconf.local.cluster import deployed_config
from pytest_runnerconf.local.runner_config import CacheS3Section, CacheSection, load_runner_config
from pytest_runnerconf.local.s3cache import (
    S3Server,
    clean_url,
    http_get,
    http_put,
    object_name,
    presigned_url,
)
from pytest_runnerconf.resources import fixtures_path

SECRET = "s3-secret-for-the-test-only"


@pytest.mark.parametrize(
    ("shared", "path", "key", "expected"),
    [
        # cache/cache.go GetAdapter, v18.11: runners get their own namespace unless Shared
        (True, "", "rc-cache-1", "project/7/rc-cache-1"),
        (False, "", "rc-cache-1", "runner/t1_abcdef/project/7/rc-cache-1"),
        (True, "ci/cache", "k", "ci/cache/project/7/k"),
        (False, "ci/cache", "a/b", "ci/cache/runner/t1_abcdef/project/7/a/b"),
        # TestGenerateObjectName: a key that leaves the project's prefix gets no adapter
        (True, "", "../other", None),
        (True, "", "", None),
    ],
)
def test_object_name_follows_the_runners_cache_path(
    shared: bool, path: str, key: str, expected: str | None
) -> None:
    cache = CacheSection(type="s3", path=path, shared=shared)
    assert object_name(cache, "t1_abcdef", 7, key) == expected


def test_clean_url_drops_query_and_user_info() -> None:
    url = "http://user:pw@10.0.0.1:9000/bucket/project/1/k?X-Amz-Credential=AK%2F1&X-Amz-Signature=abc#f"
    assert clean_url(url) == "http://10.0.0.1:9000/bucket/project/1/k"


def test_cache_zip_has_directory_entries_and_relative_paths() -> None:
    data = zip_entries([("rc-cache/nonce.txt", b"n-1\n"), ("rc-cache/deep/x", b"x")])
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.namelist() == ["rc-cache/", "rc-cache/nonce.txt", "rc-cache/deep/", "rc-cache/deep/x"]
    tar, count = zip_to_tar(data)
    assert count == 2
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        fh = archive.extractfile("rc-cache/nonce.txt")
        assert fh is not None and fh.read() == b"n-1\n"
        assert archive.getmember("rc-cache/deep").isdir()


def test_an_entry_outside_the_project_directory_is_refused() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../escape", b"x")
    with pytest.raises(ValueError, match="outside the project directory"):
        zip_to_tar(buf.getvalue())


@pytest.fixture
def server() -> Iterator[S3Server]:
    srv = S3Server("127.0.0.1").start(["runnerconf-cache"], "runnerconf-local", SECRET)
    try:
        yield srv
    finally:
        srv.stop()


def test_presigned_put_then_get_round_trips_cache_zip(server: S3Server) -> None:
    cache = CacheSection(
        type="s3",
        shared=True,
        s3=CacheS3Section(
            server_address=server.address,
            access_key="runnerconf-local",
            secret_key=SECRET,
            bucket_name="runnerconf-cache",
            insecure=True,
        ),
    )
    name = object_name(cache, "t1_abcdef", 1, "rc-cache-run")
    assert name == "project/1/rc-cache-run"
    put = presigned_url(cache, "PUT", name, 600)
    # what the helper prints: path-style bucket, no signature, no key
    assert clean_url(put) == f"http://{server.address}/runnerconf-cache/project/1/rc-cache-run"
    assert SECRET not in put
    archive = zip_entries([("rc-cache/nonce.txt", b"nonce-42\n")])
    assert http_put(put, archive, {"x-amz-meta-cachekey": "rc-cache-run"}) == 200
    got = http_get(presigned_url(cache, "GET", name, 600))
    assert (got.status, got.body) == (200, archive) and got.etag
    # another runner without Shared looks under its own prefix and finds nothing
    unshared = object_name(CacheSection(type="s3", shared=False), "rccacheru", 1, "rc-cache-run")
    assert http_get(presigned_url(cache, "GET", str(unshared), 600)).status == 404


def test_config_toml_cache_tables_parse_and_the_secret_is_redacted_when_deployed() -> None:
    path = fixtures_path("local", "config.toml")
    subs = {"@gitlab-url": "http://127.0.0.1:1", "@local-dns": "172.17.0.1", "@s3-address": "172.17.0.1:9"}
    cfg = load_runner_config(path, substitutions={**subs, "@s3-secret-key": SECRET})
    caches = {s.name: s.cache for s in cfg.entries()}
    first = caches["runnerconf-local"]
    assert first is not None and first.s3 is not None
    assert (first.type, first.shared, first.s3.bucket_name, first.s3.insecure) == (
        "s3",
        True,
        "runnerconf-cache",
        True,
    )
    assert first.s3.secret_key == SECRET and SECRET not in repr(first)
    assert caches["runnerconf-cache"] == first  # same bucket, shared
    deployed = deployed_config(path.read_text(), {**subs, "@s3-secret-key": SECRET})
    assert SECRET not in deployed and 'SecretKey = "[REDACTED]"' in deployed
