"""twelve.features: region features for the model, from a detector to a typed LMDB store."""
