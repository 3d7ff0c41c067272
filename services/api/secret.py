"""The key that signs session cookies: from settings, else generated once and kept in data_dir."""
from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from shared.infra.settings import Settings
from shared.infra.private import private_dir


def load_secret_key(settings: Settings) -> str:
    if settings.secret_key:
        return settings.secret_key
    path = Path(settings.data_dir) / "secret_key"
    for _ in range(50):
        if path.exists():
            key = path.read_text().strip()
            if key:
                return key
        else:
            private_dir(path.parent)
            tmp = path.with_name(f".secret_key.{os.getpid()}.{secrets.token_hex(4)}")
            tmp.write_text(secrets.token_hex(32))
            os.chmod(tmp, 0o600)
            try:
                os.link(tmp, path)  # atomic and refuses to replace: concurrent starters agree on one key
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
            continue
        time.sleep(0.1)
    raise RuntimeError(f"could not read the session key from {path}")
