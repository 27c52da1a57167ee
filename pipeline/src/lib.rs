//! The pipeline; being built.
