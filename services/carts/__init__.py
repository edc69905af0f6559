"""The cart side: the producer client with its on-disk spool, and the shopping simulator."""
