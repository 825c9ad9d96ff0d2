"""LMOrderedIterator: lane continuity, exact resume, DDP sharding, rolling, memory maps."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from data_utils import LMOrderedIterator

# Token i of the stream has value i, so a batch tells exactly which stream positions it holds.
N = 1_003


def stream(n: int = N) -> np.ndarray:
    return np.arange(n, dtype=np.int64)


def epoch_batches(it: LMOrderedIterator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(it)


def test_lanes_are_contiguous_and_continue_across_steps():
    it = LMOrderedIterator(stream(), batch_size=4, tgt_len=7)
    lane_len = N // 4  # 250; the last 3 tokens are dropped
    assert it.lane_len == lane_len and len(it) == -(-(lane_len - 1) // 7) == 36
    batches = epoch_batches(it)
    assert len(batches) == len(it)
    x0, _ = batches[0]
    assert x0.dtype == torch.int64 and x0.shape == (4, 7)
    assert x0[:, 0].tolist() == [0, 250, 500, 750]
    for x, y in batches:
        assert torch.equal(y, x + 1)  # targets are the next token of the same lane
    for (_, y_prev), (x_next, _) in zip(batches, batches[1:], strict=False):
        assert torch.equal(x_next[:, 0], y_prev[:, -1])  # lane by lane, no gap, no overlap
    # Every step is tgt_len long except the last: 249 targets = 35 * 7 + 4.
    assert [x.shape[1] for x, _ in batches] == [7] * 35 + [4]
    targets = torch.cat([y for _, y in batches], dim=1)
    assert targets.numel() == it.n_tokens_per_epoch == 4 * 249
    assert torch.equal(targets[:, -1], torch.tensor([249, 499, 749, 999]))


def test_iteration_stops_at_epoch_end_and_next_iter_starts_next_epoch():
    it = LMOrderedIterator(stream(), batch_size=4, tgt_len=50)
    first = epoch_batches(it)
    assert it.state_dict()["epoch"] == 0
    second = epoch_batches(it)
    assert it.state_dict()["epoch"] == 1
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, second, strict=True))


def test_break_mid_epoch_then_continue_from_the_current_position():
    it = LMOrderedIterator(stream(), batch_size=4, tgt_len=10)
    ref = epoch_batches(LMOrderedIterator(stream(), batch_size=4, tgt_len=10))
    got = []
    for batch in it:
        got.append(batch)
        if len(got) == 5:
            break
    got.extend(it)
    assert len(got) == len(ref) and all(torch.equal(a[0], b[0]) for a, b in zip(got, ref, strict=True))


def _roundtrip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("roll_seed", [None, 123])
@pytest.mark.parametrize("stop_after", [1, 9, 25, 26, 30])  # 25 batches per epoch: 25/26 cross the boundary
def test_state_dict_resumes_at_the_exact_next_batch(roll_seed, stop_after):
    kwargs = dict(batch_size=4, tgt_len=10, roll_seed=roll_seed)
    reference = LMOrderedIterator(stream(), **kwargs)
    full = [b for _ in range(3) for b in reference]
    it = LMOrderedIterator(stream(), **kwargs)
    seen = []
    while len(seen) < stop_after:
        for batch in it:
            seen.append(batch)
            if len(seen) == stop_after:
                break
    state = _roundtrip(it.state_dict())
    assert all(type(v) is int for v in state.values())
    resumed = LMOrderedIterator(stream(), **kwargs)
    resumed.load_state_dict(state)
    rest = []
    while len(seen) + len(rest) < len(full):
        rest.extend(resumed)
    for (xa, ya), (xb, yb) in zip(seen + rest, full, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize("roll_seed", [None, 7])
def test_ddp_ranks_partition_the_single_process_batch(roll_seed):
    data = stream(6 * 97 + 5)
    whole = LMOrderedIterator(data, 6, 16, roll_seed=roll_seed)
    single = [x for _ in range(2) for x, _ in whole]  # two epochs of one iterator
    for world in (1, 2, 3):
        per_rank = []
        for rank in range(world):
            it = LMOrderedIterator(data, 6, 16, rank=rank, world_size=world, roll_seed=roll_seed)
            per_rank.append([x for _ in range(2) for x, _ in it])
        assert len({len(r) for r in per_rank}) == 1  # every rank takes the same number of steps
        for step, x in enumerate(single):
            parts = [r[step] for r in per_rank]
            assert all(p.shape[0] == 6 // world for p in parts)
            assert torch.equal(torch.cat(parts, dim=0), x)  # same tokens; disjoint lanes by construction
        epoch_tokens = torch.cat([torch.cat(r[: len(r) // 2], dim=1).flatten() for r in per_rank])
        assert epoch_tokens.unique().numel() == epoch_tokens.numel()  # no overlap between ranks


def test_batch_size_must_divide_by_world_size():
    with pytest.raises(ValueError, match="divisible by world_size 4"):
        LMOrderedIterator(stream(), batch_size=6, tgt_len=8, world_size=4, rank=0)
    with pytest.raises(ValueError, match="too few"):
        LMOrderedIterator(stream(5), batch_size=4, tgt_len=8)


def test_load_state_dict_rejects_another_layout():
    state = LMOrderedIterator(stream(), batch_size=4, tgt_len=8).state_dict()
    with pytest.raises(ValueError, match="batch_size=4"):
        LMOrderedIterator(stream(), batch_size=2, tgt_len=8).load_state_dict(state)


def test_roll_changes_lane_starts_per_epoch_and_keeps_lanes_contiguous():
    data = stream()
    it = LMOrderedIterator(data, batch_size=4, tgt_len=300, roll_seed=3)
    starts = []
    for _ in range(3):
        (x, y), *_ = list(it)
        starts.append(x[:, 0].tolist())
        lanes = np.asarray(x)
        assert ((lanes[:, 1:] - lanes[:, :-1]) % N == 1).all()  # contiguous modulo the wrap
        assert all((b - a) % N == it.lane_len for a, b in zip(starts[-1], starts[-1][1:], strict=False))
    assert len({s[0] for s in starts}) == 3
    again = LMOrderedIterator(data, batch_size=4, tgt_len=300, roll_seed=3)
    assert next(iter(again))[0][:, 0].tolist() == starts[0]


def test_memmap_lanes_are_views(tmp_path):
    np.save(tmp_path / "train.npy", np.arange(10_000, dtype=np.uint16))
    data = np.load(tmp_path / "train.npy", mmap_mode="r")
    it = LMOrderedIterator(data, batch_size=6, tgt_len=32, rank=1, world_size=2)
    assert np.shares_memory(it._lanes, data)
    x, y = next(iter(it))
    assert x.dtype == torch.int64 and x.shape == (3, 32)
    assert x[0, 0].item() == 3 * (10_000 // 6)
