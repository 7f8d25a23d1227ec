"""Image bytes from a location to the verified cache: transports, address policy, the cache."""
