"""alnvid: ultrasound video deep learning for axillary lymph-node metastasis."""
import os

# Hospital workstations are offline: albumentations would otherwise look for a newer version online at
# import, and warn on every start ("Error fetching version info"). Set before any submodule imports it.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
