"""Model registry; importing this package registers every model."""
from models.registry import list_models, make, model_factory, register
from models import edsr, liif, lmf, lte, metasr, mlp, rcan, rdn, srno, swinir  # noqa: F401  (registration side effect)

__all__ = ['list_models', 'make', 'model_factory', 'register']
