"""Publishing the records to NATS JetStream, from the files (README, "Publishing to NATS")."""
