"""Command-line entry points for fm4npp, installed as the import package ``fm4npp_cli``."""
