"""Run verified marketplace images on an existing cloud (OpenStack, through openstacksdk).

- ``connection``: ``connect(name)`` reads clouds.yaml / ``OS_*`` and authenticates once.
- ``images``: imagekit's images in Glance, found by their properties and proven by Glance's
  own hash against the verified entry; uploads that are safe to interrupt.
- ``sync``: keep a site's Glance in step with the marketplace under the site policy.
- ``servers``: ``launch --cloud`` (plan, then execute), instances, console, kill, stop, start.
- ``snapshot``: a server's disk into a new draft entry, as the local snapshot does.
- ``errors``: the cloud's refusals as one-line imagekit errors.

The entry is always verified here, by the same resolver, policy and image cache as a local
launch; the cloud is trusted to run what it is given, not to hold the right bytes.
"""
