"""One module per ``navid`` subcommand; each exposes ``register(subparsers)``."""
