"""The config schema of every command, and loading YAML with --set overrides into it."""
