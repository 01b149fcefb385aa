"""Fails to load on purpose: its requests answer 500 while the other functions work."""
raise ImportError("marker-v1-broken: this function cannot be loaded")
