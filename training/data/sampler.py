"""Sampling that survives an interruption: a resumed run draws the batches it would have drawn."""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import DistributedSampler, Sampler


class ResumableSampler(Sampler[int]):
    """A :class:`DistributedSampler` epoch that can start part-way, for exact resumes.

    Epoch ``e`` is the permutation ``DistributedSampler(seed, e)`` gives this process (its shard
    of a shuffled, ``drop_last`` epoch); the first ``skip`` indices are left out (those the
    interrupted run already consumed).

    Args:
        size: images in the dataset; world, rank: processes and this one's index; seed: the run's.
    """

    def __init__(self, size: int, world: int, rank: int, seed: int):
        self.inner = DistributedSampler(
            range(size), num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.skip = 0

    @property
    def epoch_length(self) -> int:
        """Indices a whole epoch gives this process, whatever ``skip`` is."""
        return len(self.inner)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.inner.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.inner)[self.skip :])

    def __len__(self) -> int:
        return len(self.inner) - self.skip
