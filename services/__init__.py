"""Entry points and I/O (the top layer): the CLI, operator tools, carts, Kafka admin, storage
and observability, each a sub-package."""
