"""Credentials: JWTs, password hashes, encrypted secrets, and the auth middleware."""
