"""Pallas kernels for jaxsparse: block-sparse matmul.

`BlockSparse` stores a K x N weight as (bk, bn) blocks; `block_sparse_matmul`
computes `x @ W` on the stored blocks only, forward and backward, with
Pallas Mosaic kernels on TPU (`pallas_kernels.tpu`), Pallas Triton kernels
on GPU (`pallas_kernels.gpu`) and a plain-XLA scan on CPU
(`pallas_kernels.cpu`).
"""

from pallas_kernels.format import BlockSparse, block_mask, index_dtype
from pallas_kernels.ops import block_sparse_matmul, resolve_backend

__all__ = (
    "BlockSparse", "block_mask", "block_sparse_matmul", "index_dtype",
    "resolve_backend",
)
