"""Outbound address rules shared by Helicone-Target-URL and alert webhooks."""

from __future__ import annotations

import pytest

from usagegate.netguard import address_refusal, normalise_base


@pytest.mark.parametrize(
    "address, allowed_with_opt_in, allowed_without",
    [("8.8.8.8", True, True), ("127.0.0.1", True, False), ("::1", True, False), ("10.1.2.3", True, False),
     ("192.168.0.7", True, False), ("169.254.169.254", False, False), ("fe80::1", False, False),
     ("0.0.0.0", False, False), ("224.0.0.1", False, False)],
    ids=["public", "loopback4", "loopback6", "private10", "private192", "metadata", "link-local6", "unspecified",
         "multicast"],
)
def test_address_rules(address: str, allowed_with_opt_in: bool, allowed_without: bool) -> None:
    assert (address_refusal(address, allow_private=True) is None) is allowed_with_opt_in
    assert (address_refusal(address, allow_private=False) is None) is allowed_without


def test_normalise_base() -> None:
    assert normalise_base("HTTPS://API.Example.com:8443/v1/") == "https://api.example.com:8443/v1"
    assert normalise_base("http://[::1]:9000") == "http://[::1]:9000"
    for bad in ("ftp://x", "nope", "http://"):
        with pytest.raises(ValueError):
            normalise_base(bad)
