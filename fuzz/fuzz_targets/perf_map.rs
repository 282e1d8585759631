#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stallprobe::fuzzing::perf_map(data));
