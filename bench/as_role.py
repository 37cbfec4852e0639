#!/usr/bin/env python3
"""Prints a PostgreSQL URL with its user and password replaced: as_role.py URL USER PASSWORD."""
import sys
import urllib.parse as up

url, user, password = sys.argv[1:4]
parts = up.urlsplit(url)
host = parts.hostname + (f":{parts.port}" if parts.port else "")
print(up.urlunsplit((parts.scheme, f"{user}:{up.quote(password)}@{host}", parts.path, parts.query, "")))
