"""One random generator per device, seeded alike: the batched augmentations draw their
per-image parameters on the device that holds the batch."""

from __future__ import annotations

import torch


class DeviceGenerators:
    """Mixin: ``generator(device)`` (created and seeded with ``self.seed`` on first use) and
    ``reseed(seed)`` (every device's generator restarts from ``seed``)."""

    seed: int

    def generator(self, device: torch.device) -> torch.Generator:
        """The generator for ``device``."""
        gens = self.__dict__.setdefault("_generators", {})
        if device not in gens:
            gens[device] = torch.Generator(device=device).manual_seed(int(self.seed))
        return gens[device]

    def reseed(self, seed: int) -> None:
        """Restart every device's generator from ``seed``."""
        self.seed = int(seed)
        for gen in self.__dict__.get("_generators", {}).values():
            gen.manual_seed(self.seed)
