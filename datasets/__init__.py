"""Dataset registry; importing this package registers every dataset and wrapper."""
from datasets.registry import list_datasets, make, register
from datasets import concat, image_folder, wrappers  # noqa: F401  (registration side effect)

__all__ = ['list_datasets', 'make', 'register']
