"""Pipeline steps: one module per stage."""
