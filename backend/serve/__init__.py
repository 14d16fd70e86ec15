"""The backend as a server of the protocol (docs/ARCHITECTURE.md §3, §9): `python -m backend serve`.

lines.py reads requests from a byte stream; server.py is the one Server (requests -> Trainer,
events out through a transport) on stdio; tcp_server.py puts the same Server behind a socket, and
remote_policy.py is what its clients may ask and see.
"""
