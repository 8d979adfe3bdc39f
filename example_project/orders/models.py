"""The orders app keeps no tables of its own: each order's state is its workflow run."""
