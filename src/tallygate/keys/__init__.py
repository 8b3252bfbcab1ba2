"""API keys: secrets (hashed at rest), limits, and the audit of every change."""
