"""The host credential an agent was given at registration, kept in its state directory (mode 0600).

A restarted agent reads it and does not register again. The file also records the server it
belongs to, so an agent pointed at another server says so instead of failing with "unknown".
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from uuid import UUID

from gpufleet.paths import default_state_dir

__all__ = ["CredentialStore", "StoredCredential", "default_state_dir"]


@dataclass(frozen=True, slots=True)
class StoredCredential:
    server: str
    host_id: UUID
    organization_id: UUID
    name: str
    credential: str


class CredentialStore:
    FILE = "host-credential.json"

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / self.FILE

    def load(self) -> StoredCredential | None:
        """The stored credential; None when there is none. ValueError when the file is damaged."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read {self.path}: {exc}; remove it to register again") from None
        try:
            return StoredCredential(
                server=str(raw["server"]),
                host_id=UUID(raw["host_id"]),
                organization_id=UUID(raw["organization_id"]),
                name=str(raw["name"]),
                credential=str(raw["credential"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{self.path} is damaged ({exc}); remove it to register again") from None

    def save(self, cred: StoredCredential) -> None:
        """Write atomically, readable by the agent's user only."""
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        data = {**asdict(cred), "host_id": str(cred.host_id), "organization_id": str(cred.organization_id)}
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        tmp.replace(self.path)

    def retire(self) -> Path | None:
        """Move a credential the server refused aside (kept for the operator); where it went."""
        if not self.path.exists():
            return None
        dest = self.path.with_suffix(".revoked")
        self.path.replace(dest)
        return dest
