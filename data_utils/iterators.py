"""Ordered language-model streams: contiguous lanes, cut into [B, tgt_len] batches, resumable."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


class LMOrderedIterator:
    """Transformer-XL's ordered iterator, with DDP lanes and an exactly resumable position.

    The stream of N tokens is cut into `batch_size` contiguous lanes of `lane_len = N // batch_size`
    tokens; the last `N % batch_size` tokens are dropped (fewer than one token per lane). Lane b holds
    stream positions [b * lane_len, (b + 1) * lane_len). Step t yields, for every lane, inputs
    x = lane[t*L : t*L + L] and targets y = lane[t*L + 1 : t*L + L + 1], so step t+1 continues each lane
    exactly where step t stopped and a model's carried memory stays in sync with its lane.

    An epoch has `lane_len - 1` targets per lane, hence `ceil((lane_len - 1) / tgt_len)` steps; all are
    `tgt_len` long except possibly the last, which holds the remainder. Every lane has the same length,
    so every DDP rank takes the same number of steps.

    `batch_size` is global: rank r of `world_size` owns lanes [r * B/W, (r + 1) * B/W). The lanes of
    all ranks together are exactly the lanes of a single process with the same `batch_size`.

    With `roll_seed` set, at the start of every epoch (the first included) the whole stream is rotated
    by an offset drawn from `numpy.random.default_rng([roll_seed, epoch])` before it is cut into lanes.
    Each epoch then starts its lanes at different places and drops a different remainder; the same seed
    gives the same offsets on every rank and after a resume. The rotation joins the stream's last token
    to its first, so one target per epoch crosses that seam.

    Batches are read from `data` (typically a memory map) as they are needed; without rolling the
    lanes are a reshaped view of it, so no rank ever copies the split.
    """

    def __init__(
        self,
        data: np.ndarray,
        batch_size: int,
        tgt_len: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device = "cpu",
        roll_seed: int | None = None,
    ) -> None:
        if batch_size < 1 or tgt_len < 1:
            raise ValueError(f"batch_size and tgt_len must be positive, got {batch_size} and {tgt_len}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
        if batch_size % world_size:
            raise ValueError(
                f"batch_size {batch_size} (the global number of lanes) must be divisible by "
                f"world_size {world_size}"
            )
        self.data = data if isinstance(data, np.ndarray) else np.asarray(data)
        if self.data.ndim != 1:
            raise ValueError(f"data must be a 1-D array of token ids, got shape {self.data.shape}")
        self.batch_size = batch_size
        self.tgt_len = tgt_len
        self.rank = rank
        self.world_size = world_size
        self.device = torch.device(device)
        self.roll_seed = roll_seed
        self.local_batch_size = batch_size // world_size
        self.lane_len = len(self.data) // batch_size
        if self.lane_len < 2:
            raise ValueError(
                f"{len(self.data)} tokens are too few for {batch_size} lanes: each lane needs 2 tokens"
            )
        self.n_targets = self.lane_len - 1  # targets per lane per epoch
        self._first_lane = rank * self.local_batch_size
        # A view (no copy) of this rank's lanes, used when the stream is not rotated.
        lanes = self.data[: self.lane_len * batch_size].reshape(batch_size, self.lane_len)
        self._lanes = lanes[self._first_lane : self._first_lane + self.local_batch_size]
        self.epoch = 0
        self.position = 0  # offset within each lane of the next batch's first input

    def __len__(self) -> int:
        """Batches per epoch."""
        return -(-self.n_targets // self.tgt_len)

    @property
    def n_tokens_per_epoch(self) -> int:
        """Targets per epoch across all ranks."""
        return self.n_targets * self.batch_size

    def _roll_offset(self, epoch: int) -> int:
        if self.roll_seed is None:
            return 0
        return int(np.random.default_rng([self.roll_seed, epoch]).integers(len(self.data)))

    def _read(self, start: int, length: int, offset: int) -> np.ndarray:
        """Tokens [start, start + length + 1) of every local lane: [B/W, length + 1]."""
        if offset == 0:
            return np.asarray(self._lanes[:, start : start + length + 1])
        lane_starts = (np.arange(self.local_batch_size) + self._first_lane) * self.lane_len
        idx = (offset + lane_starts[:, None] + start + np.arange(length + 1)[None, :]) % len(self.data)
        return np.asarray(self.data[idx])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (x, y) int64 tensors [B/W, L] from the current position to the end of the epoch."""
        if self.position >= self.n_targets:  # the previous epoch is finished: start the next one
            self.epoch += 1
            self.position = 0
        offset = self._roll_offset(self.epoch)
        while self.position < self.n_targets:
            start = self.position
            length = min(self.tgt_len, self.n_targets - start)
            # Advance before yielding, so a state_dict taken after this batch resumes at the next one.
            self.position = start + length
            chunk = torch.from_numpy(self._read(start, length, offset).astype(np.int64))
            chunk = chunk.to(self.device)
            yield chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()

    def state_dict(self) -> dict:
        """Position as plain ints (safe for `torch.load(weights_only=True)`)."""
        return {
            "epoch": int(self.epoch),
            "position": int(self.position),
            "batch_size": int(self.batch_size),
            "lane_len": int(self.lane_len),
        }

    def load_state_dict(self, d: dict) -> None:
        """Resume at the exact batch that follows the one the state was saved after."""
        for key, mine in (("batch_size", self.batch_size), ("lane_len", self.lane_len)):
            if key in d and int(d[key]) != mine:
                raise ValueError(
                    f"iterator state has {key}={d[key]} but this iterator has {key}={mine}: "
                    "resume with the same data and global batch size"
                )
        position = int(d["position"])
        if not 0 <= position <= self.n_targets:
            raise ValueError(f"iterator position {position} is outside [0, {self.n_targets}]")
        self.epoch = int(d["epoch"])
        self.position = position
