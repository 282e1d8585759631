#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stallprobe::fuzzing::elf_symbolize(data));
