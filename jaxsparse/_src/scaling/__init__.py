"""Internal: sparse scaling laws (see jaxsparse.scaling)."""
