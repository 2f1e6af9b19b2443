"""Drill Progress Context: keeps every user's progress through SMS drills and acts on it."""

__version__ = "0.1.0"
