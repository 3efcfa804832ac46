"""Alerts: hub events and Prometheus alerts become incidents (router), incidents become
Slack messages (render), messages wait in a durable SQLite outbox and are delivered with
rate limits and retries (outbox, dispatcher, slack)."""
