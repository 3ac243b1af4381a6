"""zosfs: a FUSE filesystem for ZOS object storage."""

__version__ = "0.1.0"
