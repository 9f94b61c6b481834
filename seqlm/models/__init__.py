"""The only code that names transformers' model classes: build, load, heads."""
