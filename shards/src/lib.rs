//! The data contract; being built.
