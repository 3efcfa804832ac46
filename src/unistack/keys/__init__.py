"""The trading system's API keys (Polygon.io, Unusual Whales, Alpaca): kept in .env,
shown masked, replaced atomically, verified against each provider."""
