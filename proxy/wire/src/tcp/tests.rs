//! Tests for the TCP header, options and repr.
use super::*;
