"""ISO 9660 file systems: the writer (pycdlib) and the user-space reader."""
