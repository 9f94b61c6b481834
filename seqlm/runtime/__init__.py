"""The process a command runs in: device and precision, memory, processes (torchrun)."""
