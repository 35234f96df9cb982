"""BOS test suite: unit (pure core), integration (real services), e2e."""
