"""glotta: build language models for your own language, from raw corpus to a published model."""

__version__ = "0.1.0"
