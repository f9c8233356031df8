"""Built-in adapters for :func:`zoo.swap` (diffusers, transformers), registered like any plugin."""
