"""RFC 8058 one-click unsubscribe needs https: warned at start and in
`dispatch config` (issue 16, point 6)."""

import json

import pytest

from dispatch.config import public_url_warning

from .test_cli import ok


@pytest.mark.parametrize("url", ["https://news.example.org/", "http://localhost:8000/", "http://127.0.0.1/",
                                 "http://[::1]:8000/", "http://app.localhost/"])
def test_https_or_this_machine_is_fine(url):
    assert public_url_warning(url) is None


@pytest.mark.parametrize("url", ["http://news.example.org/", "http://10.0.0.5:8000/", "http://localhost.example.org/"])
def test_plain_http_elsewhere_is_warned_about(url):
    warning = public_url_warning(url)
    assert warning and "RFC 8058" in warning and "https" in warning and url in warning


def test_config_shows_the_warning(run, monkeypatch):
    monkeypatch.setenv("DISPATCH_PUBLIC_URL", "http://news.example.org/")
    shown = json.loads(ok(run("config", "--json")).stdout)
    assert len(shown["warnings"]) == 1 and "one-click unsubscribe" in shown["warnings"][0]
    assert "one-click unsubscribe" in ok(run("config")).stdout
    monkeypatch.setenv("DISPATCH_PUBLIC_URL", "https://news.example.org/")
    assert json.loads(ok(run("config", "--json")).stdout)["warnings"] == []


def test_run_warns_at_start(run, monkeypatch):
    monkeypatch.setenv("DISPATCH_PUBLIC_URL", "http://news.example.org/")
    result = ok(run("run", "--once"))  # nothing due: no relay is needed
    assert "warning:" in result.stderr and "RFC 8058" in result.stderr
    monkeypatch.setenv("DISPATCH_PUBLIC_URL", "https://news.example.org/")
    assert "RFC 8058" not in ok(run("run", "--once")).stderr
