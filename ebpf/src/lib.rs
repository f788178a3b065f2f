#![no_std]
//! placeholder: being written
