"""What a model is trained for: one module per task, each a Task the commands look up by name."""
