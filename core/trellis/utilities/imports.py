"""Whether optional packages are installed, under the flag names Lightning's examples test.

Found through import metadata, without importing the packages.
"""

from __future__ import annotations

import importlib.util


def package_available(name: str) -> bool:
    """True when `import name` would find the package."""
    return importlib.util.find_spec(name) is not None


_TORCHVISION_AVAILABLE = package_available("torchvision")
_TORCHMETRICS_AVAILABLE = package_available("torchmetrics")
_OMEGACONF_AVAILABLE = package_available("omegaconf")
_RICH_AVAILABLE = package_available("rich")
_JSONARGPARSE_AVAILABLE = package_available("jsonargparse")
