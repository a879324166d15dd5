"""Widgets of the dashboard. They never call the engine: they post messages."""
