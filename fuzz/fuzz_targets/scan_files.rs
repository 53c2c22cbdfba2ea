#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| stellaops_fuzz::targets::scan_files(data));
