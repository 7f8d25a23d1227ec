"""Facts about image bytes: the identifier, digests, compression and formats."""
