"""The dashboard's screens. Screens call the engine API; widgets only post messages."""
