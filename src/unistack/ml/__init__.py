"""The GPU ML engine: backends, capability report, model registry, features, training,
stream worker and client."""
