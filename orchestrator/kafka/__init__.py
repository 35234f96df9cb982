"""Kafka edges of BOS: inbound message schemas, the consumer, the outbox publisher."""
