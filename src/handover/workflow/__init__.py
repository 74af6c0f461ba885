"""What the cooperation needs on top of the pipe: the schema registry, the
sharing policy, cases, consent, continuity expectations, agreements,
retention and erasure, rectification, subject access."""
