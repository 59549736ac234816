"""Drive the real kubectl binary, as an operator would, with a private HOME (kubectl caches discovery there)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def kubectl_binary() -> str:
    """The kubectl on PATH; outside CI its absence skips the test, in CI it fails it (CI installs kubectl)."""
    found = shutil.which("kubectl")
    if found is None:
        reason = "no kubectl on PATH (install kubectl to run the kubectl scenarios)"
        if IN_CI:
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(reason)
    return found


@dataclass
class Kubectl:
    binary: str
    kubeconfig: Path
    home: Path

    def __call__(
        self,
        *args: str,
        context: str | None = None,
        input: str | None = None,
        timeout: float = 60,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        # A fresh HOME per test module: /usr/bin/kubectl may be a dispatcher that caches /version there.
        environ = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.home),
            "KUBECONFIG": str(self.kubeconfig),
        }
        environ.update(env or {})
        command = [self.binary, *(["--context", context] if context else []), *args]
        return subprocess.run(
            command, input=input, capture_output=True, text=True, timeout=timeout, env=environ, check=False
        )

    def ok(self, *args: str, **kwargs: object) -> str:
        """stdout of a command that must succeed."""
        proc = self(*args, **kwargs)  # type: ignore[arg-type]
        assert proc.returncode == 0, f"kubectl {' '.join(args)} exited {proc.returncode}: {proc.stderr}"
        return proc.stdout

    def popen(self, *args: str, context: str | None = None) -> subprocess.Popen[str]:
        environ = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.home),
            "KUBECONFIG": str(self.kubeconfig),
        }
        command = [self.binary, *(["--context", context] if context else []), *args]
        return subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ
        )
