//! Config files are operator input: any text must give a config or an error naming a line in
//! the file, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ocellus::errors::ConfigError;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ocellus::config::Config::parse(text, std::path::Path::new("fuzz.toml")) {
        Ok(_) => {}
        Err(ConfigError::Parse { line, .. }) => {
            assert!(line >= 1 && line <= text.lines().count().max(1) + 1, "line {line}");
        }
        Err(_) => {}
    }
});
