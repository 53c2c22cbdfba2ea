#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| stellaops_fuzz::targets::registry(data));
