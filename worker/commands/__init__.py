"""Sub-commands of ``crmsync``; each module has ``register(subparsers)``."""
