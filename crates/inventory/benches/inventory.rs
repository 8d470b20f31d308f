//! Inventory speed over an in-memory datastore (placeholder, filled below).
fn main() {}
