"""The eventsite app: photos in, events on Kafka, and everything that consumes
them. Its packages follow one event's path (see the README's "Where things live")."""
