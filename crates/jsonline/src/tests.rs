use std::collections::BTreeMap;

use proptest::prelude::*;
use serde::{Serialize, Serializer};

use super::*;

fn same_as_serde_json<T: Serialize + ?Sized>(value: &T) {
    let ours = to_vec(value).unwrap();
    let theirs = serde_json::to_vec(value).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ours),
        String::from_utf8_lossy(&theirs)
    );
}

#[test]
fn every_ascii_byte_at_every_position_of_a_word() {
    for b in 0u8..0x80 {
        for len in 1..20 {
            for at in 0..len {
                let mut s = vec![b'a'; len];
                s[at] = b;
                same_as_serde_json(std::str::from_utf8(&s).unwrap());
            }
        }
    }
}

#[test]
fn escapes_side_by_side_and_non_ascii() {
    for s in [
        "",
        "\"",
        "\\\\\"\"",
        "\u{0}\u{1}\u{1f}\u{7f}",
        "a/b\\c\"d\ne\rf\tg\u{8}h\u{c}i",
        "/vmfs/volumes/5f9a1c2e/vm 01/vm 01.vmx",
        "Gäste ✓ 仮想マシン \u{2028}\u{2029} 😀",
        "C:\\VMs\\Windows Server 2019\\Windows Server 2019.vmx",
        "tab\tin the middle of a long enough string\u{1b}[0m",
    ] {
        same_as_serde_json(s);
    }
}

#[derive(Serialize)]
enum Shape {
    Unit,
    Newtype(u32),
    Tuple(i8, String),
    Struct { a: Option<bool>, b: Vec<u8> },
}

struct Bytes(&'static [u8]);

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

#[derive(Serialize)]
struct Unit;

#[derive(Serialize)]
struct Wrapper(String);

#[derive(Serialize)]
struct Everything {
    shapes: Vec<Shape>,
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped: Option<u8>,
    none: Option<String>,
    ints: (i8, i16, i32, i64, i128, u8, u16, u32, u64, u128),
    extremes: [i64; 2],
    floats: Vec<f64>,
    small_floats: Vec<f32>,
    ch: [char; 3],
    bytes: Bytes,
    unit: (),
    unit_struct: Unit,
    wrapper: Wrapper,
    by_name: BTreeMap<String, Vec<String>>,
    by_number: BTreeMap<i64, bool>,
    by_flag: BTreeMap<bool, u8>,
    by_char: BTreeMap<char, u8>,
    empty_seq: Vec<u8>,
    empty_map: BTreeMap<String, u8>,
    shared: std::sync::Arc<str>,
}

#[test]
fn every_serde_shape_is_written_as_serde_json_writes_it() {
    let value = Everything {
        shapes: vec![
            Shape::Unit,
            Shape::Newtype(7),
            Shape::Tuple(-3, "x\"y".into()),
            Shape::Struct {
                a: Some(false),
                b: vec![0, 255],
            },
        ],
        skipped: None,
        none: None,
        ints: (
            i8::MIN,
            i16::MIN,
            i32::MIN,
            i64::MIN,
            i128::MIN,
            u8::MAX,
            u16::MAX,
            u32::MAX,
            u64::MAX,
            u128::MAX,
        ),
        extremes: [0, -1],
        floats: vec![0.0, -0.0, 1.5, 1e300, f64::NAN, f64::INFINITY, 0.1],
        small_floats: vec![0.1, f32::MAX],
        ch: ['a', '"', '\n'],
        bytes: Bytes(b"\x00\x7f\xff"),
        unit: (),
        unit_struct: Unit,
        wrapper: Wrapper("w".into()),
        by_name: [("k\\".to_string(), vec!["v".to_string()])].into(),
        by_number: [(-5, true), (9, false)].into(),
        by_flag: [(true, 1)].into(),
        by_char: [('\t', 2)].into(),
        empty_seq: Vec::new(),
        empty_map: BTreeMap::new(),
        shared: "arc".into(),
    };
    same_as_serde_json(&value);
}

#[test]
fn a_key_json_cannot_hold_is_an_error_and_leaves_the_output_alone() {
    #[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
    struct Key {
        a: u8,
    }
    let map: BTreeMap<Key, u8> = [(Key { a: 1 }, 2)].into();
    let mut out = b"kept".to_vec();
    let err = to_vec_into(&mut out, &map).unwrap_err();
    assert!(matches!(err, Error::KeyMustBeAString("a struct")), "{err}");
    assert_eq!(out, b"kept");
    assert!(
        serde_json::to_vec(&map).is_err(),
        "serde_json refuses it too"
    );
    let floats: BTreeMap<String, f64> = [("x".to_string(), 1.0)].into();
    same_as_serde_json(&floats);
}

#[test]
fn appends_to_what_is_there() {
    let mut out = b"[".to_vec();
    to_vec_into(&mut out, "a").unwrap();
    assert_eq!(out, b"[\"a\"");
}

proptest! {
    #[test]
    fn any_string_is_escaped_as_serde_json_escapes_it(s in "\\PC*|[\\x00-\\x7f]{0,40}") {
        prop_assert_eq!(to_vec(&s).unwrap(), serde_json::to_vec(&s).unwrap());
    }

    #[test]
    fn any_strings_in_a_structure(v in proptest::collection::vec((any::<String>(), any::<Option<u64>>()), 0..8)) {
        prop_assert_eq!(to_vec(&v).unwrap(), serde_json::to_vec(&v).unwrap());
    }
}
