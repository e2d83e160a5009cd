"""`edgeopt tune`: the search space (space.py), objectives and budgets as constraints (objectives.py), the
study's storage (storage.py) and the trial loop with its outputs (run.py)."""
