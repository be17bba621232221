"""Everything that knows aiokafka's settings, and the embedded broker."""
