"""Moving cached keys on the GPU: Triton kernels that read and write each key once.

Keys are position-major and contiguous: ``[P, ..., head_dim]``, ``rows_per_position`` rows of
``head_dim`` per position; ``cos``/``sin`` are ``[P, head_dim / 2]`` float32, one angle per channel
pair. In eager PyTorch a rotation is ~8 passes over the keys (casts, ``rotate_half``'s
concatenation, products, sum), and copying each block into the prompt's cache one more.

``place_blocks`` copies every block's keys into the prompt's cache at its offset *and* rotates
them there, in one launch (a table of the blocks' addresses): one read and one write of each key.
"""

from __future__ import annotations

import torch

from lit_block.host_copies import to_device

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU installs: the torch path in rope.py is used
    triton = None

ROWS_PER_PROGRAM = 64

if triton is not None:

    @triton.jit
    def _place_block_rows(dst_ptr, src_table, first_rows, n_rows, cos_ptr, sin_ptr, rows_per_position,
                          HALF: tl.constexpr, ROWS: tl.constexpr):
        block = tl.program_id(0)
        src_ptr = tl.load(src_table + block).to(tl.pointer_type(dst_ptr.dtype.element_ty))  # this block's keys
        rows = tl.program_id(1).to(tl.int64) * ROWS + tl.arange(0, ROWS)  # rows within the block
        keep = (rows < tl.load(n_rows + block))[:, None]
        out_rows = tl.load(first_rows + block) + rows  # rows within the prompt's cache
        cols = tl.arange(0, HALF)[None, :]
        src = src_ptr + rows[:, None] * (2 * HALF) + cols
        dst = dst_ptr + out_rows[:, None] * (2 * HALF) + cols
        angle = (out_rows // rows_per_position)[:, None] * HALF + cols
        x1 = tl.load(src, mask=keep).to(tl.float32)
        x2 = tl.load(src + HALF, mask=keep).to(tl.float32)
        c = tl.load(cos_ptr + angle, mask=keep)
        s = tl.load(sin_ptr + angle, mask=keep)
        tl.store(dst, (x1 * c - x2 * s).to(dst_ptr.dtype.element_ty), mask=keep)
        tl.store(dst + HALF, (x2 * c + x1 * s).to(dst_ptr.dtype.element_ty), mask=keep)


def place_blocks(dst: torch.Tensor, blocks: list[torch.Tensor], starts: list[int], cos: torch.Tensor,
                 sin: torch.Tensor) -> None:
    """Write each ``blocks[i] [L_i, ..., head_dim]`` into ``dst [P, ..., head_dim]`` at position ``starts[i]``,
    rotating position ``p`` of ``dst`` by ``cos[p], sin[p]`` (``[P, head_dim / 2]``); one launch."""
    rows_per_position = dst[0].numel() // dst.shape[-1]
    device = dst.device
    table = torch.tensor([[b.data_ptr(), s * rows_per_position, b.shape[0] * rows_per_position]
                          for b, s in zip(blocks, starts)], dtype=torch.int64).T
    table = to_device(table, device)  # contiguous there
    longest = max(b.shape[0] for b in blocks) * rows_per_position
    grid = (len(blocks), triton.cdiv(longest, ROWS_PER_PROGRAM))
    _place_block_rows[grid](dst, table[0], table[1], table[2], cos.contiguous(), sin.contiguous(), rows_per_position,
                            HALF=dst.shape[-1] // 2, ROWS=ROWS_PER_PROGRAM)


def can_place_blocks(dst: torch.Tensor, blocks: list[torch.Tensor]) -> bool:
    """Whether ``place_blocks`` applies: Triton present, CUDA, contiguous, same dtype, half a head a power of two."""
    half = dst.shape[-1] // 2
    return (triton is not None and dst.is_cuda and dst.is_contiguous() and half >= 1 and half & (half - 1) == 0
            and all(b.is_cuda and b.is_contiguous() and b.dtype == dst.dtype and b.shape[1:] == dst.shape[1:]
                    for b in blocks))
