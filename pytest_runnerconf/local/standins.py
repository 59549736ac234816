"""Which locally built image stands in for a public image name (no registry is reachable here)."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping

from pytest_runnerconf.local.podstatus import ImageChoice


class StandIns:
    def __init__(self, patterns: Mapping[str, str], built: Mapping[str, str]) -> None:
        """patterns: image pattern -> stand-in name (in priority order); built: stand-in name -> local tag."""
        self._patterns = list(patterns.items())
        self._built = dict(built)

    def resolve(self, image: str) -> ImageChoice:
        for pattern, role in self._patterns:
            if fnmatch.fnmatchcase(image, pattern):
                return ImageChoice(public=image, local=self._built.get(role), role=role)
        return ImageChoice(public=image, local=None)
