"""Engine: the model graph (relations.py) and the batched walk (walk.py)."""
