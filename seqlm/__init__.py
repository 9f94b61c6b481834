"""seqlm: raw text to trained, evaluated Transformer language models, from the shell."""

__version__ = "0.1.0"
