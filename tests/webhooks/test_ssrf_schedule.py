"""The SSRF guard's rules and the retry schedule, as pure functions (plus one real connection)."""

from __future__ import annotations

import ipaddress
import random

import httpx
import pytest

from gpufleet.webhooks import schedule, ssrf
from gpufleet.webhooks.sender import Sender
from tests.webhooks.receiver import Receiver

REFUSED = {
    "127.0.0.1": "loopback",
    "::1": "loopback",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "192.168.1.1": "private",
    "fd00::1": "private",
    "169.254.169.254": "link-local",
    "fe80::1": "link-local",
    "100.64.0.1": "cgnat",
    "224.0.0.1": "multicast",
    "ff02::1": "multicast",
    "0.0.0.0": "unspecified",  # noqa: S104
    "::": "unspecified",
    "::ffff:127.0.0.1": "loopback",
    "::ffff:169.254.169.254": "link-local",
    "240.0.0.1": "reserved",
    "192.0.0.8": "reserved",  # IETF protocol assignments
    "2002:7f00:1::1": "loopback",  # 6to4 wrapping 127.0.0.1
    "2002:a9fe:a9fe::": "link-local",  # 6to4 wrapping the metadata service
    "2001:0:4136:e378:8000:63bf:80ff:fffe": "loopback",  # Teredo, client 127.0.0.1 (obfuscated)
}


@pytest.mark.parametrize(("address", "rule"), sorted(REFUSED.items()))
def test_refused_addresses_name_their_rule(address: str, rule: str) -> None:
    assert ssrf.address_rule(ipaddress.ip_address(address)) == rule


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8"])
def test_global_unicast_passes(address: str) -> None:
    assert ssrf.address_rule(ipaddress.ip_address(address)) is None


async def test_every_resolved_address_must_pass() -> None:
    async def mixed(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.5"]

    with pytest.raises(ssrf.WebhookRefused) as info:
        await ssrf.resolve("https://hooks.example.com/x", [], mixed)
    assert info.value.rule == "private" and info.value.status == 422
    assert "10.0.0.5" in info.value.message and "GPUFLEET_WEBHOOK_ALLOW_NETWORKS" in info.value.message


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("ftp://example.com/x", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("http://user:pw@example.com/", "credentials"),
        ("http:///nohost", "url"),
        ("http://[::]:80/", "unspecified"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ],
)
async def test_urls_refused(url: str, rule: str) -> None:
    with pytest.raises(ssrf.WebhookRefused) as info:
        await ssrf.resolve(url, [])
    assert info.value.rule == rule


async def test_allow_networks_admit_on_premises_receivers() -> None:
    allow = ssrf.parse_networks("127.0.0.0/8, fd00::/8")
    target = await ssrf.resolve("http://127.0.0.1:9/hook?x=1", allow)
    assert (target.address, target.port, target.target) == ("127.0.0.1", 9, "/hook?x=1")
    with pytest.raises(ssrf.WebhookRefused):
        await ssrf.resolve("http://10.0.0.1/", allow)
    with pytest.raises(ValueError, match="not a CIDR"):
        ssrf.parse_networks("10.0.0.0/8, nonsense")


async def test_the_sender_connects_to_the_validated_address_not_a_new_lookup() -> None:
    """DNS rebinding: the name is resolved once (to the receiver); the connection goes to that address
    with the name as Host, and nothing resolves the name again (it does not exist in DNS at all)."""
    receiver = Receiver().start()
    calls: list[str] = []

    async def once(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"]

    try:
        target = await ssrf.resolve(
            f"http://hooks.invalid:{receiver.port}/ok", ssrf.parse_networks("127.0.0.0/8"), once
        )
        sender = Sender(timeout_s=2)
        outcome = await sender.send(target, b"{}", {"webhook-id": "msg_x"})
        await sender.aclose()
    finally:
        receiver.stop()
    assert calls == ["hooks.invalid"]
    assert outcome.status_code == 200 and len(outcome.body) == 4096
    assert {k.lower(): v for k, v in receiver.requests[0].headers.items()}["host"] == f"hooks.invalid:{receiver.port}"
    async with httpx.AsyncClient() as plain:
        with pytest.raises(httpx.ConnectError):
            await plain.post(f"http://hooks.invalid:{receiver.port}/ok")  # the name itself leads nowhere


def test_schedule_steps_with_jitter() -> None:
    rng = random.Random(7)
    assert schedule.SCHEDULE_S == (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
    for made, base in enumerate(schedule.SCHEDULE_S):
        delay = schedule.next_delay(made, rng)
        assert delay is not None and base * 0.9 <= delay <= base * 1.1
    assert schedule.next_delay(len(schedule.SCHEDULE_S), rng) is None
    spread = {round(schedule.next_delay(1, random.Random(s)) or 0, 3) for s in range(20)}
    assert len(spread) > 10  # jittered, not lockstep


def test_retry_after_parsing_and_bounds() -> None:
    assert schedule.parse_retry_after("120") == 120
    assert schedule.parse_retry_after("soon") is None
    assert schedule.parse_retry_after(None) is None
    assert (schedule.parse_retry_after("Wed, 21 Oct 2099 07:28:00 GMT") or 0) > 0
    assert schedule.bounded_retry_after(10**9, max_s=3600) == 3600
    assert schedule.bounded_retry_after(0) == 1
