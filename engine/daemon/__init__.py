"""The engine daemon: holds a user's shares and clones, reached over a Unix socket."""
