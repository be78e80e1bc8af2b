//! A Bundle (or a resource) from a FHIR server, as bytes: reading it must never panic, and
//! every resource it accepts must keep its text exactly and either project into a store row
//! or be refused with an error naming the record and the field.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(page) = hearth_fhir::parse_bundle(text) {
        for entry in page.entries {
            match entry {
                Ok(hearth_fhir::Entry::Resource(r)) => {
                    assert!(text.contains(&r.json), "an entry's text was altered");
                    if let Err(e) = hearth_model::row::resource_row_raw(&r.json) {
                        assert!(!e.to_string().is_empty());
                    }
                }
                Ok(hearth_fhir::Entry::Deleted { .. }) => {}
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
    }
    if let Ok(r) = hearth_fhir::RawResource::parse(text) {
        assert_eq!(r.json, text);
    }
});
