"""Issued secrets: format, checksum, hashing."""

from __future__ import annotations

import pytest

from gpufleet import security


@pytest.mark.parametrize("kind", sorted(security.KINDS))
def test_issued_secret_is_well_formed_and_hashed(kind: str) -> None:
    s = security.issue(kind)
    assert s.secret.startswith(f"{kind}_") and len(s.secret) >= 4 + 43
    assert security.well_formed(s.secret, kind)
    assert s.hash == security.hash_secret(s.secret) and len(s.hash) == 32
    assert s.secret.startswith(s.display_prefix) and s.display_prefix != s.secret
    assert security.issue(kind).secret != s.secret


def test_typos_truncation_and_wrong_kind_are_refused() -> None:
    s = security.issue(security.API_KEY).secret
    flipped = s[:10] + ("A" if s[10] != "A" else "B") + s[11:]
    assert not security.well_formed(flipped, security.API_KEY)
    assert not security.well_formed(s[:-1], security.API_KEY)
    assert not security.well_formed(s + "x", security.API_KEY)
    assert not security.well_formed(s, security.JOIN_TOKEN)
    assert not security.well_formed("gfk_", security.API_KEY)
    assert not security.well_formed("", security.API_KEY)
