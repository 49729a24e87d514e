"""Parsers turn one line of a backend's stdout into events or health signals."""
