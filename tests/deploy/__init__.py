"""Tests of deploy/: Kubernetes manifests and container images."""
