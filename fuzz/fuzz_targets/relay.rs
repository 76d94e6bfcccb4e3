#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| webrtcd::fuzzing::relay(data));
