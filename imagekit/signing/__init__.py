"""The endorser's part: keys, signing, verification, trust in certificates."""
