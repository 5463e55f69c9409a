"""The relay server (`llm-relay-server`); see app.py for routes and relay/docs/config.md for settings."""
