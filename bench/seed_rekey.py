#!/usr/bin/env python3
"""Prints a psql script that seeds CONNECTIONS Binance connections (4 per
user) whose API key and secret are owner-bound envelopes sealed with KEY,
exactly as the service stores them, for bench/rekey.sh:

    python3 bench/seed_rekey.py KEY CONNECTIONS | psql -q DATABASE_URL

Needs `pip install cryptography` (the old system's library). Bench data only:
the service ships no seeding command.
"""

import base64
import hashlib
import hmac
import json
import sys
import uuid
from datetime import datetime, timezone

from cryptography.fernet import Fernet

PER_USER = 4


def key_id(key: str) -> str:
    """The id the key ring derives for an unnamed key (src/crypto/fingerprint.rs)."""
    raw = base64.urlsafe_b64decode(key)
    return "k" + hmac.new(raw, b"exchange-connections key id", hashlib.sha256).hexdigest()[:10]


def main() -> None:
    key, count = sys.argv[1], int(sys.argv[2])
    fernet, version = Fernet(key.encode()), key_id(key)
    now = datetime.now(timezone.utc).isoformat()
    out = sys.stdout
    users = [str(uuid.uuid4()) for _ in range((count + PER_USER - 1) // PER_USER)]
    out.write("COPY users (id, created_at, updated_at) FROM STDIN WITH (FORMAT csv);\n")
    for user in users:
        out.write(f"{user},{now},{now}\n")
    out.write("\\.\n")
    out.write(
        "COPY exchange_keys (id, user_id, exchange, environment, label, status, api_key_encrypted, "
        "api_secret_encrypted, key_version, api_key_hint, consecutive_failures, created_at, updated_at) "
        "FROM STDIN WITH (FORMAT csv);\n"
    )
    for n in range(count):
        user, cid = users[n // PER_USER], str(uuid.uuid4())
        api_key = f"BENCHKEY{n:08d}".ljust(64, "K")
        api_secret = f"BENCHSECRET{n:08d}".ljust(64, "s")
        tokens = []
        for field, secret in (("api_key", api_key), ("api_secret", api_secret)):
            envelope = json.dumps({"v": 1, "uid": user, "cid": cid, "f": field, "s": secret}, separators=(",", ":"))
            tokens.append(fernet.encrypt(envelope.encode()).decode())
        hint = f"{api_key[:4]}…{api_key[-4:]}"
        out.write(f"{cid},{user},binance,production,acct {n % PER_USER},HEALTHY,{tokens[0]},{tokens[1]},"
                  f"{version},{hint},0,{now},{now}\n")
    out.write("\\.\n")
    out.write("ANALYZE users; ANALYZE exchange_keys;\n")


if __name__ == "__main__":
    main()
