"""The event contract and its only way onto Kafka: schema, outbox, publishing."""
