"""Rendezvous: meeting, hole-punch coordination and relaying through a server.

`protocol` is the wire format, `server_core` and `client_core` the sans-IO
state machines, `server` the asyncio server behind `dattui rendezvous`.
"""
