"""``python -m client`` runs relay-client."""

from client.cli import main

main()
