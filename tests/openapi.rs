//! The committed OpenAPI document must match the one generated from the code.
//! Regenerate with `UPDATE_OPENAPI=1 cargo test --test openapi`.

#[test]
fn committed_openapi_is_current() {
    let generated = stepkto::api::docs::openapi_json();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
    if std::env::var("UPDATE_OPENAPI").as_deref() == Ok("1") {
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.json is stale; run UPDATE_OPENAPI=1 cargo test --test openapi"
    );
}
