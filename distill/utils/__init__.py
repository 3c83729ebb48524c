from .errors import DistillInputError, cli_entry
from .io import atomic_path, atomic_write_bytes, atomic_write_json, dumps_json, read_json

__all__ = [
    "DistillInputError",
    "cli_entry",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "dumps_json",
    "read_json",
]
