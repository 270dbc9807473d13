"""Local tooling: a Kafka-protocol broker on this machine, the demo and its console output."""
