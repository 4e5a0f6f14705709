"""twelve.train: the multi-task trainer that ties the model to the task datasets."""
