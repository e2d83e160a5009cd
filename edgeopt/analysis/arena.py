"""onnxruntime's activation memory on the CPU, simulated allocation by allocation.

Two mechanisms decide what a session's activations keep resident, and neither is a fixed multiple of the
liveness plan's peak (measured with onnxruntime 1.32: PP-OCRv4's detector at 640x640 plans 37.5 MiB of
activations and holds 70 MiB after its first run, 118 MiB from its second; a chain of Sigmoid/Add on
3 MiB tensors plans 9.2 MiB and holds 10 then 19.6 MiB):

* **the first run** takes every tensor from a BFC arena (onnxruntime's ``BFCArena``, default
  ``OrtArenaCfg``): a request is rounded up to 256 bytes and served by the smallest free chunk that holds
  it (split only when the chunk is at least twice the request, so up to half a chunk can go unused), a
  freed chunk merges with its free neighbours, and when nothing fits the arena adds a region: the first
  1 MiB, then each at least the request and twice the one before (``kNextPowerOfTwo``). Regions are never
  given back, and a fresh region's pages become resident only where they are written;
* **from the second run** the memory pattern traced during the first (``MemPatternPlanner``: each tensor at
  the best-fitting gap between the live ones, else after the last) is allocated as one block from that
  arena, which usually needs a region larger than any the first run made: its pages become resident too.

So the resident arena is the high-water mark written in each region, summed: the first run's, then the
pattern block's on top. The allocation order is the liveness plan's (the graph's node order): each
node's outputs are allocated before it runs, its inputs freed after their last reader. Graph inputs are the
caller's buffers, not the arena's; a tensor onnxruntime lays out in channel blocks (NCHWc on x86) takes its
padded size. The caller's outputs are taken from the arena on every run but left out of the memory pattern
(onnxruntime does not trace them), so from the second run they come beside its block. The tensors the runtime
adds to the model's (its NCHWc reorders' copies, a kernel's scratch) are the caller's to pass in
(Graph.runtime_tensors). Not simulated: onnxruntime's planner handing a dead tensor's buffer to a new one of the
same size (the BFC best fit mostly does the same), and the heap a process already holds
(analysis.runtime_memory accounts for what loading left free).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from edgeopt.analysis.memory import LiveTensor

MiB = 1 << 20
MIN_ALLOCATION = 256  # BFCArena::kMinAllocationSize
INITIAL_REGION = 1 * MiB  # OrtArenaCfg's default initial_chunk_size_bytes
MAX_DEAD_BYTES = 128 * MiB  # a chunk wasting this much on one request is split whatever its size
PATTERN_ALIGNMENT = 64  # onnxruntime aligns each tensor in a memory pattern to 64 bytes


@dataclass(frozen=True)
class ArenaSimulation:
    first_run_bytes: int  # resident after the first run
    pattern_bytes: int  # the memory pattern's block, allocated from the second run on
    resident_bytes: int  # resident from the second run on: the regions' written high-water marks
    regions: tuple[int, ...]  # the sizes of the regions the arena made, in order


class _Arena:
    """Regions of chunks ([offset, size, free] in address order per region), each region's high-water mark, and
    the free chunks as (size, region, offset) in order: the best fit is the first that holds a request."""

    def __init__(self) -> None:
        self.next_region = INITIAL_REGION
        self.regions: list[list[list[int]]] = []
        self.sizes: list[int] = []
        self.written: list[int] = []
        self.free_chunks: list[tuple[int, int, int]] = []
        self._extend(MIN_ALLOCATION)  # the session makes its first region when it is created

    def allocate(self, size: int) -> tuple[int, int]:
        rounded = -(-max(size, 1) // MIN_ALLOCATION) * MIN_ALLOCATION
        found = bisect.bisect_left(self.free_chunks, (rounded, -1, -1))
        if found == len(self.free_chunks):
            self._extend(rounded)
            return self.allocate(size)
        chunk_size, region, offset = self.free_chunks.pop(found)
        chunks = self.regions[region]
        index = bisect.bisect_left(chunks, [offset])
        if chunk_size >= 2 * rounded or chunk_size - rounded >= MAX_DEAD_BYTES:
            chunks[index:index + 1] = [[offset, rounded, 0], [offset + rounded, chunk_size - rounded, 1]]
            bisect.insort(self.free_chunks, (chunk_size - rounded, region, offset + rounded))
        else:
            chunks[index][2] = 0
        self.written[region] = max(self.written[region], offset + rounded)
        return region, offset

    def free(self, handle: tuple[int, int]) -> None:
        region, offset = handle
        chunks = self.regions[region]
        index = bisect.bisect_left(chunks, [offset])
        chunks[index][2] = 1
        if index + 1 < len(chunks) and chunks[index + 1][2]:
            self._unlist(region, chunks[index + 1])
            chunks[index][1] += chunks.pop(index + 1)[1]
        if index > 0 and chunks[index - 1][2]:
            self._unlist(region, chunks[index - 1])
            chunks[index - 1][1] += chunks.pop(index)[1]
            index -= 1
        bisect.insort(self.free_chunks, (chunks[index][1], region, chunks[index][0]))

    def _unlist(self, region: int, chunk: list[int]) -> None:
        key = (chunk[1], region, chunk[0])
        del self.free_chunks[bisect.bisect_left(self.free_chunks, key)]

    def _extend(self, rounded: int) -> None:
        grew = False
        while rounded > self.next_region:
            self.next_region *= 2
            grew = True
        size = self.next_region
        if not grew:
            self.next_region *= 2
        self.regions.append([[0, size, 1]])
        self.sizes.append(size)
        self.written.append(0)
        bisect.insort(self.free_chunks, (size, len(self.regions) - 1, 0))


def pattern_size(tensors: Iterable[LiveTensor]) -> int:
    """The block onnxruntime's memory pattern needs for ``tensors``: each placed, in allocation order, at the
    gap between live blocks that wastes least, else after the block of highest offset."""
    blocks: list[tuple[int, int, int]] = []  # live (offset, size, last step), by offset
    peak = 0
    for tensor in sorted(tensors, key=lambda t: (t.start, t.end, t.name)):
        blocks = [block for block in blocks if block[2] >= tensor.start]
        size = -(-(tensor.bytes or 0) // PATTERN_ALIGNMENT) * PATTERN_ALIGNMENT
        if not size:
            continue
        current, waste, place = 0, None, blocks[-1][0] + blocks[-1][1] if blocks else 0
        for offset, block_size, _last in blocks:
            if offset >= current and offset - current >= size and (waste is None or offset - current - size < waste):
                waste, place = offset - current - size, current
            current = offset + block_size
        bisect.insort(blocks, (place, size, tensor.end))
        peak = max(peak, place + size)
    return peak


def simulate_arena(tensors: Iterable[LiveTensor], caller_owned: Iterable[str] = (),
                   laid_out: Mapping[str, int] | None = None, returned: Iterable[str] = (),
                   temporary: Iterable[str] = ()) -> ArenaSimulation:
    """The resident activation arena of a session running ``tensors`` (a liveness plan's, steps in execution
    order) twice or more; ``caller_owned``: tensors the arena does not hold (the graph's inputs); ``laid_out``:
    the bytes the runtime's layout gives some tensors instead of their own (Graph.layout_tensor_bytes);
    ``returned``: the tensors handed to the caller (the graph's outputs), which every run takes from the arena
    but the memory pattern leaves out (onnxruntime's ExecutionFrame does not trace them); ``temporary``: kernels'
    scratch (Graph.runtime_tensors' ``kernel_scratch``), which every run takes from the arena while the kernel
    runs and the pattern leaves out too. From the second run the pattern's block is allocated first, then the
    returned and temporary tensors at their steps, in the regions the first run left free."""
    skip = set(caller_owned)
    outside = set(returned) | set(temporary)
    laid_out = laid_out or {}
    planned = [replace(t, bytes=laid_out.get(t.name, t.bytes)) for t in tensors if t.bytes and t.name not in skip]
    arena = _Arena()
    _replay(arena, planned, keep=set())  # the first run: every tensor freed after its last step
    first_run = sum(arena.written)
    pattern = pattern_size([t for t in planned if t.name not in outside])
    if pattern:
        arena.allocate(pattern)
    _replay(arena, [t for t in planned if t.name in outside], keep=set(returned))
    return ArenaSimulation(first_run_bytes=first_run, pattern_bytes=pattern, resident_bytes=sum(arena.written),
                           regions=tuple(arena.sizes))


def _replay(arena: _Arena, tensors: list[LiveTensor], keep: set[str]) -> None:
    """One run's allocations in step order: each step's new tensors, then the frees of those whose last step it
    is, except ``keep`` (returned to the caller: held to the end of the simulation)."""
    starting: dict[int, list[LiveTensor]] = {}
    ending: dict[int, list[LiveTensor]] = {}
    for tensor in tensors:
        starting.setdefault(tensor.start, []).append(tensor)
        ending.setdefault(tensor.end, []).append(tensor)
    handles: dict[str, tuple[int, int]] = {}
    for step in sorted(set(starting) | set(ending)):
        for tensor in starting.get(step, ()):
            handles[tensor.name] = arena.allocate(tensor.bytes or 0)
        for tensor in ending.get(step, ()):
            if tensor.name not in keep:
                arena.free(handles.pop(tensor.name))
