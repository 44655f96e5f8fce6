"""The project's benchmark: `python -m bench` from the repository root (the code lives in
rgemma.bench so that an installed `rgemma bench` runs the same thing)."""
