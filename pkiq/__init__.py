"""The application shell: settings from PKIQ_* variables, the database, the CLI."""
