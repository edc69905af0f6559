"""Kafka from the outside: the embedded broker (and its durable S3 storage), topic admin,
consumer lag, and the retailer-side tail."""
