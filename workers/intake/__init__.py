"""From Kafka to a runner: fetching, parsing, the lane buffers, parked jobs, offsets."""
