"""Model formats: what a file is (``artifact``), and one module per format that reads it safely."""
