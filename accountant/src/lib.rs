//! Privacy accounting for DP-SGD; placeholder until built.
