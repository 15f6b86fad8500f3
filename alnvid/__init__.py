"""alnvid: ultrasound video deep learning for axillary lymph-node metastasis."""
__version__ = "0.1.0"
