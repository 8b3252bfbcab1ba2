"""Key secrets: made from the OS's randomness, shown once, stored only as a SHA-256 hash.

A plain hash is enough here (unlike for passwords): a secret carries 238 bits of randomness,
so there is nothing to guess, and a fast hash keeps the look-up per request cheap.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string

_ALPHABET = string.ascii_letters + string.digits
KEY_PREFIX = "tg-"
ADMIN_PREFIX = "tga-"
PREFIX_SHOWN = 10


def new_secret(prefix: str = KEY_PREFIX) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(40))


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def shown_prefix(secret: str) -> str:
    """What lists show of a secret: enough to recognise it, far too little to use it."""
    return secret[:PREFIX_SHOWN]


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
