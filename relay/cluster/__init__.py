"""Several relay nodes on one PostgreSQL store (DESIGN §3.9): who is alive, who holds which host,
and the authenticated one-hop link that carries a visitor's request to the node holding its tunnel."""
