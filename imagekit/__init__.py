"""imagekit: build, sign, publish and launch virtual-machine appliances."""

__version__ = "0.1.0"
