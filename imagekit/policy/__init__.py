"""Site policy: which verified entries may run."""
