"""benchflow-intent: how accurately a classifier maps requests to intents."""
