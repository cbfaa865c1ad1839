"""The paper's evaluation protocol over test datasets (above models, datasets and inference)."""
