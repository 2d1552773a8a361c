"""The dashboard: server-rendered pages under /ui, signed in with an API key."""
