"""Operating a worker: health and readiness endpoints, Prometheus metrics, bundle hot reload,
JSON logs, topic administration and the crash-test hook."""
