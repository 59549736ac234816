"""Bare git repositories of the local GitLab, driven with the git CLI through plumbing (no work tree)."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_runnerconf.local.errors import LocalAPIError

AUTHOR_NAME = "runnerconf"
AUTHOR_EMAIL = "runnerconf@localhost.invalid"
ZERO_SHA = "0" * 40
_ACTIONS = ("create", "update", "delete", "move", "chmod")
_HEX = re.compile(r"^[0-9a-fA-F]{7,40}$")


class RepoError(LocalAPIError):
    """A repository request GitLab would refuse; `status` is the HTTP status GitLab answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Commit:
    id: str
    parent_ids: tuple[str, ...]
    title: str
    message: str
    author_name: str
    author_email: str
    authored_date: str
    committer_name: str
    committer_email: str
    committed_date: str

    @property
    def short_id(self) -> str:
        return self.id[:8]


@dataclass(frozen=True)
class Branch:
    name: str
    commit: Commit


@dataclass(frozen=True)
class FileBlob:
    path: str
    ref: str
    commit_id: str
    last_commit_id: str
    blob_id: str
    content: bytes


@dataclass(frozen=True)
class TreeEntry:
    id: str
    name: str
    type: str  # blob | tree | commit
    path: str
    mode: str


@dataclass(frozen=True)
class FileAction:
    """One entry of the commits API `actions` list."""

    action: str
    file_path: str
    content: bytes | None = None
    previous_path: str = ""
    execute_filemode: bool | None = None

    @classmethod
    def from_api(cls, index: int, raw: dict[str, Any]) -> FileAction:
        action = raw.get("action")
        if action not in _ACTIONS:
            raise RepoError(f"actions[{index}][action] does not have a valid value")
        path = raw.get("file_path")
        if not isinstance(path, str) or not path:
            raise RepoError(f"actions[{index}][file_path] is missing")
        content = raw.get("content")
        data: bytes | None = None
        if content is not None:
            if raw.get("encoding", "text") == "base64":
                data = base64.b64decode(content)
            else:
                data = str(content).encode()
        mode = raw.get("execute_filemode")
        if isinstance(mode, str):
            mode = mode.lower() in ("true", "1")
        return cls(action, path, data, raw.get("previous_path") or "", mode)


def _check_path(path: str) -> str:
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..", ".git") for p in parts):
        raise RepoError(f"Your changes could not be committed, because the file path {path!r} is invalid")
    return path


class GitRepo:
    """One bare repository; every mutation happens under a lock and a compare-and-swap ref update."""

    def __init__(self, path: Path, default_branch: str = "main") -> None:
        self.path = Path(path)
        self.default_branch = default_branch
        self._lock = threading.RLock()

    @property
    def url(self) -> str:
        return self.path.resolve().as_uri()

    # plumbing ---------------------------------------------------------------------------------------

    def _env(self, index: str | None = None) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.path),
            "GIT_DIR": str(self.path),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "TZ": "UTC",
            "LC_ALL": "C",
            "GIT_LITERAL_PATHSPECS": "1",  # file paths from the API are never globs
        }
        if index:
            env["GIT_INDEX_FILE"] = index
        return env

    def _git(
        self, *args: str, stdin: bytes | None = None, index: str | None = None, check: bool = True
    ) -> bytes:
        proc = subprocess.run(
            ["git", *args], input=stdin, capture_output=True, env=self._env(index), check=False
        )
        if check and proc.returncode != 0:
            raise LocalAPIError(
                f"git {args[0]} failed in {self.path}: {proc.stderr.decode(errors='replace')}"
            )
        return proc.stdout if proc.returncode == 0 else b""

    def _try(self, *args: str) -> str | None:
        proc = subprocess.run(["git", *args], capture_output=True, env=self._env(), check=False)
        return proc.stdout.decode().strip() if proc.returncode == 0 else None

    # lifecycle --------------------------------------------------------------------------------------

    @classmethod
    def open_or_init(cls, path: Path, default_branch: str = "main", readme: str = "") -> GitRepo:
        """Open an existing bare repo, or create one whose default branch holds a README.md."""
        repo = cls(path, default_branch)
        if (repo.path / "HEAD").exists():
            return repo
        repo.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["git", "init", "--quiet", "--bare", f"--initial-branch={default_branch}", str(repo.path)],
            capture_output=True,
            env=repo._env(),
            check=True,
        )
        text = readme or f"# {repo.path.stem}\n\nScratch project of the runnerconf local cluster.\n"
        repo.commit(
            default_branch,
            "Initial commit",
            [FileAction("create", "README.md", text.encode())],
            allow_orphan=True,
        )
        return repo

    # refs -------------------------------------------------------------------------------------------

    def valid_branch_name(self, name: str) -> bool:
        if not name or name.startswith("-"):
            return False
        return self._try("check-ref-format", "--branch", name) is not None

    def resolve(self, ref: str) -> str | None:
        """Branch, then tag, then (abbreviated) commit SHA; None when nothing matches."""
        if not ref or ref.startswith("-"):
            return None
        for full in (f"refs/heads/{ref}", f"refs/tags/{ref}"):
            sha = self._try("rev-parse", "--verify", "--quiet", f"{full}^{{commit}}")
            if sha:
                return sha
        if _HEX.match(ref):
            return self._try("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        return None

    def ref_kind(self, ref: str) -> str | None:
        """'branch' or 'tag' for a named ref (what pipelines accept), else None."""
        if not ref or ref.startswith("-"):
            return None
        if self._try("rev-parse", "--verify", "--quiet", f"refs/heads/{ref}"):
            return "branch"
        if self._try("rev-parse", "--verify", "--quiet", f"refs/tags/{ref}"):
            return "tag"
        return None

    def commit_info(self, ref: str) -> Commit:
        sha = self.resolve(ref)
        if sha is None:
            raise RepoError("404 Commit Not Found", 404)
        fmt = "%H%x00%P%x00%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%cI%x00%s%x00%B"
        fields = self._git("show", "-s", f"--format={fmt}", sha).decode().split("\x00")
        return Commit(
            id=fields[0],
            parent_ids=tuple(fields[1].split()),
            author_name=fields[2],
            author_email=fields[3],
            authored_date=fields[4],
            committer_name=fields[5],
            committer_email=fields[6],
            committed_date=fields[7],
            title=fields[8],
            message=fields[9].rstrip("\n") + "\n" if fields[9].strip() else "",
        )

    def branches(self) -> list[Branch]:
        out = self._git("for-each-ref", "--format=%(refname:strip=2)", "refs/heads").decode()
        return [self.branch(name) for name in sorted(out.split())]

    def branch(self, name: str) -> Branch:
        sha = self._try("rev-parse", "--verify", "--quiet", f"refs/heads/{name}") if name else None
        if not sha or name.startswith("-"):
            raise RepoError("404 Branch Not Found", 404)
        return Branch(name, self.commit_info(sha))

    def create_branch(self, name: str, ref: str) -> Branch:
        with self._lock:
            if not self.valid_branch_name(name):
                raise RepoError("Branch name is invalid")
            if self._try("rev-parse", "--verify", "--quiet", f"refs/heads/{name}"):
                raise RepoError("Branch already exists")
            sha = self.resolve(ref)
            if sha is None:
                raise RepoError(f"Invalid reference name: {ref}")
            self._git("update-ref", f"refs/heads/{name}", sha, ZERO_SHA)
            return self.branch(name)

    def delete_branch(self, name: str) -> None:
        with self._lock:
            old = self.branch(name).commit.id
            if name == self.default_branch:
                raise RepoError("The default branch of a project cannot be deleted.", 405)
            self._git("update-ref", "-d", f"refs/heads/{name}", old)

    # files ------------------------------------------------------------------------------------------

    def read_file(self, ref: str, path: str) -> FileBlob:
        sha = self.resolve(ref)
        if sha is None:
            raise RepoError("404 Commit Not Found", 404)
        path = path.strip("/")
        obj = f"{sha}:{path}"
        if self._try("cat-file", "-t", obj) != "blob":
            raise RepoError("404 File Not Found", 404)
        blob_id = self._git("rev-parse", obj).decode().strip()
        content = self._git("cat-file", "blob", blob_id)
        last = self._git("log", "-1", "--format=%H", sha, "--", path).decode().strip()
        return FileBlob(path, ref, sha, last or sha, blob_id, content)

    def tree(self, ref: str, path: str = "", recursive: bool = False) -> list[TreeEntry]:
        """Entries under `path` at `ref` (trees too when recursive), as the repository tree API lists them."""
        sha = self.resolve(ref)
        path = path.strip("/")
        if sha is None or (path and self._try("cat-file", "-t", f"{sha}:{path}") != "tree"):
            raise RepoError("404 Tree Not Found", 404)
        args = ["ls-tree", "-z", *(["-r", "-t"] if recursive else []), sha]
        if path:
            args += ["--", f"{path}/"]
        entries = []
        for record in self._git(*args).decode().split("\0"):
            if not record:
                continue
            meta, name = record.split("\t", 1)
            mode, kind, obj = meta.split()
            entries.append(TreeEntry(obj, name.rsplit("/", 1)[-1], kind, name, mode))
        return entries

    # commits ----------------------------------------------------------------------------------------

    def commit(
        self,
        branch: str,
        message: str,
        actions: list[FileAction],
        *,
        start_branch: str = "",
        start_sha: str = "",
        author_name: str = "",
        author_email: str = "",
        allow_orphan: bool = False,
    ) -> Commit:
        """Apply `actions` on top of `branch` (or of the start ref for a new branch) as one commit."""
        if not actions:
            raise RepoError("actions is empty")
        with self._lock:
            old, parent = self._commit_base(branch, start_branch, start_sha, allow_orphan)
            with tempfile.TemporaryDirectory(prefix="runnerconf-index-") as tmp:
                index = str(Path(tmp) / "index")
                if parent:
                    self._git("read-tree", parent, index=index)
                else:
                    self._git("read-tree", "--empty", index=index)
                for action in actions:
                    self._apply(index, action)
                tree = self._git("write-tree", index=index).decode().strip()
            sha = self._commit_tree(tree, parent, message, author_name, author_email)
            self._git("update-ref", f"refs/heads/{branch}", sha, old)
            return self.commit_info(sha)

    def _commit_base(
        self, branch: str, start_branch: str, start_sha: str, allow_orphan: bool
    ) -> tuple[str, str | None]:
        """(old value of the branch ref for the CAS update, parent commit or None for a root commit)."""
        if not self.valid_branch_name(branch):
            raise RepoError("Branch name is invalid")
        current = self._try("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}")
        start = start_sha or start_branch
        if current:
            if start_branch and start_branch != branch:
                raise RepoError(
                    f"A branch called '{branch}' already exists. "
                    "Switch to that branch in order to make changes"
                )
            return current, current
        if start:
            sha = self.resolve(start)
            if sha is None:
                raise RepoError(f"Cannot find start_branch or start_sha: {start}")
            return ZERO_SHA, sha
        if allow_orphan:
            return ZERO_SHA, None
        raise RepoError("You can only create or edit files when you are on a branch")

    def _entry(self, index: str, path: str) -> tuple[str, str] | None:
        """(mode, blob sha) of `path` in the temporary index, None when absent."""
        out = self._git("ls-files", "--stage", "--", path, index=index).decode()
        for line in out.splitlines():
            meta, name = line.split("\t", 1)
            if name == path:
                mode, blob, _stage = meta.split()
                return mode, blob
        return None

    def _has_dir(self, index: str, path: str) -> bool:
        return bool(self._git("ls-files", "--", f"{path}/", index=index).strip())

    def _blob(self, data: bytes) -> str:
        return self._git("hash-object", "-w", "--stdin", stdin=data).decode().strip()

    def _put(self, index: str, path: str, mode: str, blob: str) -> None:
        self._git("update-index", "--add", "--cacheinfo", f"{mode},{blob},{path}", index=index)

    def _remove(self, index: str, path: str) -> None:
        # --force-remove wants a work tree; a mode-0 --index-info line removes the entry without one
        self._git("update-index", "--index-info", stdin=f"0 {ZERO_SHA}\t{path}\n".encode(), index=index)

    def _apply(self, index: str, action: FileAction) -> None:
        path = _check_path(action.file_path)
        entry = self._entry(index, path)
        exec_mode = {True: "100755", False: "100644", None: None}[action.execute_filemode]
        if action.action == "create":
            if entry or self._has_dir(index, path):
                raise RepoError("A file with this name already exists")
            mode = exec_mode or "100644"
            self._put(index, path, mode, self._blob(action.content or b""))
            return
        if action.action == "move":
            self._move(index, action, path, exec_mode)
            return
        if entry is None:
            raise RepoError("A file with this name doesn't exist")
        mode, blob = entry
        if action.action == "update":
            self._put(index, path, exec_mode or mode, self._blob(action.content or b""))
        elif action.action == "delete":
            self._remove(index, path)
        elif action.action == "chmod":
            self._put(index, path, exec_mode or "100644", blob)

    def _move(self, index: str, action: FileAction, path: str, exec_mode: str | None) -> None:
        source = _check_path(action.previous_path or "")
        old = self._entry(index, source)
        if old is None:
            raise RepoError("A file with this name doesn't exist")
        if self._entry(index, path) or self._has_dir(index, path):
            raise RepoError("A file with this name already exists")
        mode, blob = old
        if action.content is not None:
            blob = self._blob(action.content)
        self._remove(index, source)
        self._put(index, path, exec_mode or mode, blob)

    def _commit_tree(self, tree: str, parent: str | None, message: str, name: str, email: str) -> str:
        args = ["commit-tree", tree]
        if parent:
            args += ["-p", parent]
        env_ident = {
            "GIT_AUTHOR_NAME": name or AUTHOR_NAME,
            "GIT_AUTHOR_EMAIL": email or AUTHOR_EMAIL,
            "GIT_COMMITTER_NAME": AUTHOR_NAME,
            "GIT_COMMITTER_EMAIL": AUTHOR_EMAIL,
        }
        proc = subprocess.run(
            ["git", *args],
            input=message.encode(),
            capture_output=True,
            env={**self._env(), **env_ident},
            check=False,
        )
        if proc.returncode != 0:
            raise LocalAPIError(
                f"git commit-tree failed in {self.path}: {proc.stderr.decode(errors='replace')}"
            )
        return proc.stdout.decode().strip()
