"""The client address the audit log records: X-Forwarded-For only from trusted proxies."""

from __future__ import annotations

from orchestrator.audit.addresses import client_address

PROXIES = ["10.0.0.0/8", "127.0.0.1"]


def test_the_peer_is_the_client_when_no_proxy_is_trusted() -> None:
    meta = {"REMOTE_ADDR": "203.0.113.9", "HTTP_X_FORWARDED_FOR": "198.51.100.1"}
    assert client_address(meta, []) == "203.0.113.9"


def test_an_untrusted_peer_cannot_choose_its_address_with_x_forwarded_for() -> None:
    meta = {"REMOTE_ADDR": "203.0.113.9", "HTTP_X_FORWARDED_FOR": "198.51.100.1"}
    assert client_address(meta, PROXIES) == "203.0.113.9"


def test_a_trusted_proxy_forwards_the_client_read_from_the_right() -> None:
    meta = {"REMOTE_ADDR": "10.1.2.3", "HTTP_X_FORWARDED_FOR": "1.1.1.1, 198.51.100.7, 10.9.9.9"}
    # 10.9.9.9 is another trusted hop; 198.51.100.7 is the first untrusted one: the client.
    # 1.1.1.1 was written by the client itself and is not believed.
    assert client_address(meta, PROXIES) == "198.51.100.7"


def test_a_garbled_hop_stops_the_walk_at_the_last_trusted_address() -> None:
    meta = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "198.51.100.7, not-an-ip"}
    assert client_address(meta, PROXIES) == "127.0.0.1"


def test_a_request_without_a_peer_address_has_none() -> None:
    assert client_address({}, PROXIES) is None
    assert client_address({"REMOTE_ADDR": "garbage"}, PROXIES) is None
