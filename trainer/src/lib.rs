//! DP-SGD trainer; placeholder until built.
