"""Host tensors onto the device without draining its queue.

A plain ``tensor.to("cuda")`` from ordinary (pageable) host memory makes torch wait for the stream after
the copy (``cudaStreamSynchronize``): every kernel queued before it must finish first. Where the host has
just queued a long forward (the block store's misses) and goes on to build the next one (the queries), such
a copy idles the device while the host works. From pinned memory the copy is asynchronous, ordered on the
stream like a kernel; torch's pinned-memory allocator reuses the host block only after the copy has run.
"""

from __future__ import annotations

import torch


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``tensor`` on ``device``: on CUDA from the host asynchronously (pinned, ``non_blocking``), else ``.to``."""
    device = torch.device(device)
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return _pinned(tensor).to(device, non_blocking=True)


def copy_to_device(dst: torch.Tensor, src: torch.Tensor) -> None:
    """``dst.copy_(src)`` for a host ``src`` and a device ``dst``, as :func:`to_device` does it."""
    if dst.device.type == "cuda" and src.device.type == "cpu":
        dst.copy_(_pinned(src), non_blocking=True)
    else:
        dst.copy_(src)


def _pinned(tensor: torch.Tensor) -> torch.Tensor:
    # contiguous first: pinning keeps a tensor's strides, and an expanded one's (stride 0) cannot be copied into
    return tensor.contiguous().pin_memory()
