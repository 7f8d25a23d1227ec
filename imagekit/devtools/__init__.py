"""Tools for demos and tests, not on the data path: the demo story, the tiny appliance, the
OpenStack test cloud."""
