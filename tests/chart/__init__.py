"""Tests of the Helm chart that need only the helm binary (no cluster)."""
