//! Hadoop-streaming mapper and reducer (see issue: mapper/reducer); placeholder until built.
