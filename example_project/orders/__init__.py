"""Orders of the example shop, fulfilled by a durable workflow."""
