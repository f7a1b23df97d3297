"""The Kubernetes connection looks up its proxy once, from the environment client-go reads.

Checks that ``HTTPS_PROXY`` (with its credentials) applies to the apiserver, that
``NO_PROXY`` exempts it, and that without either there is no proxy. Requests then carry
that proxy explicitly, with the session's ``trust_env`` off (so aiohttp does not read
``~/.netrc`` and the environment again per request).
"""

from __future__ import annotations

import pytest

from dbquota.adapters import kube


def test_the_apiserver_goes_through_https_proxy_with_its_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://user:secret@proxy.corp:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    proxy, auth = kube._env_proxy("https://10.0.0.1:6443")
    assert proxy == "http://proxy.corp:3128"
    assert auth is not None
    assert (auth.login, auth.password) == ("user", "secret")


def test_no_proxy_exempts_the_apiserver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "10.0.0.1,.svc")
    assert kube._env_proxy("https://10.0.0.1:6443") == (None, None)


def test_without_proxy_variables_there_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert kube._env_proxy("https://127.0.0.1:6443") == (None, None)
