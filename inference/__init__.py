"""Orchestration of trained models: loading checkpoints for inference and bounded-memory upscaling."""
