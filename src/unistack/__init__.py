"""unistack: one supervisord-managed stack — Redis, Prometheus, an ML engine and a
dashboard — with a health hub that starts, probes and recovers it."""
