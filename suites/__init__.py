"""The conformance suite: one module per area, written against the public check API."""
