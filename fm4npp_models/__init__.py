"""Reference models for fm4npp; the model package, filled by later issues."""

__all__: list[str] = []
