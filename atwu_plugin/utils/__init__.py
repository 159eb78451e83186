"""Small pure-Python helpers shared across the package (no torch)."""
