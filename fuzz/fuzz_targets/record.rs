//! Fuzzes the `_mdgate` TXT record parsers with arbitrary RRsets.
//!
//! The input is cut into TXT records at `\n` and each record into
//! character-strings at NUL, so the fuzzer explores concatenation and
//! record selection as well as the tag-list grammar. Besides "never
//! panics", every record that parses must format back to text that parses
//! to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mdgate::dns::record::{parse_index_rrset, parse_key_rrset, IndexRecord, KeyRecord};

fuzz_target!(|data: &[u8]| {
    let records: Vec<Vec<&[u8]>> = data
        .split(|b| *b == b'\n')
        .map(|record| record.split(|b| *b == 0).collect())
        .collect();

    if let Ok(Some(index)) = parse_index_rrset(&records) {
        assert_eq!(IndexRecord::parse(&index.to_string()), Ok(index));
    }
    if let Ok(Some(key)) = parse_key_rrset(&records) {
        assert_eq!(KeyRecord::parse(&key.to_string()), Ok(key));
    }
    for record in &records {
        let text = String::from_utf8_lossy(&record.concat()).into_owned();
        if let Ok(index) = IndexRecord::parse(&text) {
            assert_eq!(IndexRecord::parse(&index.to_string()), Ok(index));
        }
        if let Ok(key) = KeyRecord::parse(&text) {
            assert_eq!(KeyRecord::parse(&key.to_string()), Ok(key));
        }
    }
});
