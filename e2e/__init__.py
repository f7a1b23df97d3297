"""End-to-end tests and tools that run against a real kube-apiserver and etcd."""
