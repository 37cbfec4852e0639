#!/usr/bin/env python3
"""Prints an HS256 bearer token as Supabase issues it: mint_token.py SECRET USER_UUID [TTL_SECONDS]."""
import base64, hashlib, hmac, json, sys, time


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


secret, user = sys.argv[1], sys.argv[2]
ttl = int(sys.argv[3]) if len(sys.argv) > 3 else 3600
header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
claims = b64(json.dumps({"sub": user, "aud": "authenticated", "role": "authenticated",
                         "exp": int(time.time()) + ttl, "iat": int(time.time())}).encode())
signature = b64(hmac.new(secret.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest())
print(f"{header}.{claims}.{signature}")
