"""twelve.serve: the serving layer that answers requests with the multi-task model."""
