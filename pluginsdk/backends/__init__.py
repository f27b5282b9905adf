"""Isolation backends: one module per level, imported only when a plugin needs it."""
