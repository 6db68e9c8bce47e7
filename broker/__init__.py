"""headway's Kafka side: topic names, settings, config, the embedded broker, the producer SDK."""
