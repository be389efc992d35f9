"""Built-in analyses of a study (registered on import)."""
