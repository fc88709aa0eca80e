#![no_main]
// The harness lives in the library so that tests/fuzz_regressions.rs
// replays found crashes through the very same code.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sealgate::fuzzing::client_session::run(data);
});
