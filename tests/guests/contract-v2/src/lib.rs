//! Exports `host:infra/driver@0.2.0`: a host speaking 0.1 must refuse it.
wit_bindgen::generate!({ world: "plugin", path: "wit" });

struct V2;

impl exports::host::infra::driver::Guest for V2 {
    fn describe() -> String {
        "contract-v2".into()
    }
}

export!(V2);
