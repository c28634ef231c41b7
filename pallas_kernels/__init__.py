"""Pallas kernels for jaxsparse (block-sparse matmul; see the kernels issue)."""
