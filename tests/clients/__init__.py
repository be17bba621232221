"""Tests with Kafka clients written elsewhere: kafkajs and confluent-kafka."""
