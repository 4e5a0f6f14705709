"""twelve.model: the multi-task ViLBERT encoder and task heads, faithful to the original checkpoints."""
