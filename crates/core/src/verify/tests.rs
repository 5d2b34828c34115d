//! Unit tests of verify.
