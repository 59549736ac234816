"""The embedded local cluster: GitLab and Kubernetes APIs on loopback, job pods as real containers."""
