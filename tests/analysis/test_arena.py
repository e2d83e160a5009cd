"""onnxruntime's arena as analysis.arena simulates it, on allocation sequences small enough to follow by hand."""

from __future__ import annotations

from edgeopt.analysis.arena import pattern_size, simulate_arena
from edgeopt.analysis.memory import LiveTensor

MiB = 1 << 20
KiB = 1 << 10


def live(name: str, start: int, end: int, size: int) -> LiveTensor:
    return LiveTensor(name, start, end, size)


def test_regions_double_from_the_first_and_grow_to_a_larger_request():
    # 6.25 MiB while the first region holds 1 MiB (the next would be 2): doubled to 8 MiB; the next request,
    # which fits 8 MiB, gets 8 MiB and the one after 16 (PP-OCRv4's detector at 640x640 made 1, 8, 8, 16, 32, 64)
    tensors = [live(name, 0, 2, 6_553_600) for name in "abc"]
    simulated = simulate_arena(tensors)
    assert simulated.regions[:4] == (1 * MiB, 8 * MiB, 8 * MiB, 16 * MiB)
    assert simulated.first_run_bytes == 3 * 6_553_600


def test_the_pattern_block_takes_a_new_region_when_none_holds_it_and_its_pages_count():
    # two 3 MiB tensors alive together: regions 1, 4 (first), 4 (second) MiB, 6 MiB written; the pattern's 6 MiB
    # block fits no free region, so an 8 MiB one comes, of which 6 MiB are written: 12 MiB resident in all
    tensors = [live("a", 0, 1, 3 * MiB), live("b", 1, 1, 3 * MiB)]
    simulated = simulate_arena(tensors)
    assert simulated.regions == (1 * MiB, 4 * MiB, 4 * MiB, 8 * MiB)
    assert simulated.first_run_bytes == 6 * MiB and simulated.pattern_bytes == 6 * MiB
    assert simulated.resident_bytes == 12 * MiB


def test_a_pattern_that_fits_a_region_the_first_run_made_writes_only_beyond_what_it_wrote():
    # a 12 MiB tensor, then two of 4 MiB alive together once it is gone: regions 1 and 16 MiB; the first run
    # writes 12 MiB of the 16, and the pattern (12 MiB: the two small ones share the big one's place) lands there
    tensors = [live("big", 0, 0, 12 * MiB), live("s1", 1, 2, 4 * MiB), live("s2", 2, 2, 4 * MiB)]
    simulated = simulate_arena(tensors)
    assert simulated.regions == (1 * MiB, 16 * MiB)
    assert simulated.pattern_bytes == 12 * MiB
    assert simulated.first_run_bytes == simulated.resident_bytes == 12 * MiB


def test_a_chunk_under_twice_the_request_is_not_split():
    # 600 KiB in the free 1 MiB region: 1 MiB < 2 x 600 KiB, so the whole region goes to it and a 100 KiB tensor
    # alive beside it needs a region of its own (2 MiB), though 424 KiB of the first sit unused
    tensors = [live("a", 0, 1, 600 * KiB), live("b", 1, 1, 100 * KiB)]
    assert simulate_arena(tensors).regions[:2] == (1 * MiB, 2 * MiB)
    # 400 KiB splits the 1 MiB region, and the 100 KiB tensor takes the rest
    tensors = [live("a", 0, 1, 400 * KiB), live("b", 1, 1, 100 * KiB)]
    assert simulate_arena(tensors).regions == (1 * MiB,)


def test_freed_neighbours_merge_into_one_chunk():
    # two 256 KiB tensors side by side, both freed; a 512 KiB one then fits where they were
    tensors = [live("a", 0, 0, 256 * KiB), live("b", 0, 0, 256 * KiB), live("c", 1, 1, 512 * KiB)]
    simulated = simulate_arena(tensors)
    assert simulated.regions == (1 * MiB,) and simulated.first_run_bytes == 512 * KiB


def test_the_callers_tensors_are_not_in_the_arena():
    tensors = [live("x", 0, 1, 3 * MiB), live("y", 1, 1, 1 * KiB)]
    assert simulate_arena(tensors, caller_owned=["x"]).resident_bytes == 1 * KiB


def test_the_pattern_places_a_tensor_in_the_gap_that_wastes_least():
    # a (4 KiB) and b (8 KiB) at 0 and 4 KiB; once a is gone, c (4 KiB) takes its gap: 12 KiB, not 16
    tensors = [live("a", 0, 0, 4 * KiB), live("b", 0, 2, 8 * KiB), live("c", 1, 2, 4 * KiB)]
    assert pattern_size(tensors) == 12 * KiB
    # no gap before a live block fits: after the block of highest offset
    tensors = [live("a", 0, 2, 4 * KiB), live("b", 0, 2, 8 * KiB), live("c", 1, 2, 4 * KiB)]
    assert pattern_size(tensors) == 16 * KiB
    # sizes are aligned to 64 bytes
    assert pattern_size([live("a", 0, 0, 1), live("b", 0, 0, 1)]) == 128


def test_the_callers_outputs_stay_out_of_the_pattern_and_come_beside_it():
    # a one-Conv model on NCHWc: its input's blocked copy and its blocked output (4 MiB each, both at the one step),
    # then the plain output the caller receives (4 MiB). First run: regions 1, 4, 4 and 8 MiB, the third tensor
    # written in the 8 MiB one's first half (12 MiB written). The memory pattern holds the two internal tensors
    # only (onnxruntime does not trace a graph output into it): its 8 MiB block takes the 8 MiB region, writing its
    # second half; from the second run the output comes beside it, in a 4 MiB region already written: 16 MiB
    # resident (measured with onnxruntime 1.32 for that model: 17.0 MiB over the loaded session, its first run's
    # 0.3 MiB included). With the output in the pattern, its 12 MiB would need a 16 MiB region: 24 MiB.
    tensors = [live("x@nchwc", 0, 0, 4 * MiB), live("y", 0, 0, 4 * MiB), live("y@nchw", 0, 0, 4 * MiB)]
    simulated = simulate_arena(tensors, returned=["y@nchw"])
    assert simulated.regions == (1 * MiB, 4 * MiB, 4 * MiB, 8 * MiB)
    assert simulated.pattern_bytes == 8 * MiB and simulated.resident_bytes == 16 * MiB
    assert simulate_arena(tensors).resident_bytes == 24 * MiB


def test_kernels_scratch_stays_out_of_the_pattern_and_comes_at_its_step_in_the_regions_left_free():
    # a and b (512 KiB each) fill the first 1 MiB region; an int8 Conv's 3 MiB indirection buffer, taken while it
    # runs at step 1, needs a 4 MiB region, written to 3 MiB. From the second run the pattern (a and b: 1 MiB) takes
    # the first region again and the scratch the second: 4 MiB resident, as after the first run. Traced into the
    # pattern (which onnxruntime does not do for a kernel's temp space), the 4 MiB block would write the second
    # region to its end: 5 MiB.
    tensors = [live("a", 0, 1, 512 * KiB), live("b", 1, 2, 512 * KiB), live("conv@indirection", 1, 1, 3 * MiB)]
    simulated = simulate_arena(tensors, temporary=["conv@indirection"])
    assert simulated.regions == (1 * MiB, 4 * MiB)
    assert simulated.first_run_bytes == 4 * MiB
    assert simulated.pattern_bytes == 1 * MiB and simulated.resident_bytes == 4 * MiB
    assert simulate_arena(tensors).resident_bytes == 5 * MiB
