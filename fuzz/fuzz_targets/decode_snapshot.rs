#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stallprobe::fuzzing::decode_snapshot(data));
