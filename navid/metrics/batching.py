"""Feed clips to the detector in batches as they are read, one clip at a time, from a source."""

from __future__ import annotations

import torch

from navid.metrics.fvd import extract_features


class ClipBatches:
    """Collects clips (C, T, H, W) and runs the detector on ``batch_size`` of them at a time.

    Clips of a folder may differ in size; a batch holds consecutive clips of one shape, so a
    change of shape closes the batch early. Features come back in the order clips were added.
    """

    def __init__(self, detector: torch.nn.Module, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.detector, self.batch_size = detector, batch_size
        self._pending: list[torch.Tensor] = []
        self._features: list[torch.Tensor] = []

    def add(self, clip: torch.Tensor) -> None:
        if self._pending and self._pending[0].shape != clip.shape:
            self._flush()
        self._pending.append(clip)
        if len(self._pending) == self.batch_size:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            videos = torch.stack(self._pending)  # (B, C, T, H, W)
            self._features.append(extract_features(self.detector, videos, self.batch_size))
            self._pending = []

    def features(self) -> torch.Tensor:
        """(N, D) float64 features of every clip added so far."""
        self._flush()
        return torch.cat(self._features) if self._features else torch.empty(0, 0, dtype=torch.float64)
