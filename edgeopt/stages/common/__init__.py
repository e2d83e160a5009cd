"""What every stage shares: its record in the report, parity against the source, and the run context."""
