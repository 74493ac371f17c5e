"""What starts the real services: the native Kafka launcher (and docker-compose.yml for Docker users)."""
