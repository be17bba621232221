"""Consumer groups, one shape: poll, parse, record, commit."""
