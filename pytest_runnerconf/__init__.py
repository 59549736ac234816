"""pytest-runnerconf: proves what a GitLab Runner Kubernetes-executor cluster really does."""

__version__ = "0.1.0"
