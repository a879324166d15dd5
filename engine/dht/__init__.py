"""Mainline DHT (BEP 5): peers find each other by an info-hash derived from
the discovery key, with no server of our own."""

from .krpc import info_hash_for

__all__ = ["info_hash_for"]
