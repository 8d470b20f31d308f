use crate::{FsError, Result};

/// Splits an absolute path into its components. `/` gives none. Empty components (`//`), `.`
/// and `..` are refused: paths from API clients are never resolved relative to anything.
pub fn split_path(path: &str) -> Result<Vec<&str>> {
    let bad = |detail: &str| FsError::InvalidPath {
        path: path.to_string(),
        detail: detail.to_string(),
    };
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| bad("paths are absolute and start with /"))?;
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let comps: Vec<&str> = rest.split('/').collect();
    for c in &comps {
        match *c {
            "" => return Err(bad("empty path component")),
            "." | ".." => return Err(bad("'.' and '..' are not allowed")),
            _ => {}
        }
    }
    Ok(comps)
}

/// Splits `PATH:STREAM` (an NTFS named stream) into the path and the stream name. Only the last
/// component may carry a stream; `PATH::$DATA` and `PATH:STREAM:$DATA` name the same streams
/// as Windows does.
pub fn split_stream(path: &str) -> Result<(&str, Option<&str>)> {
    let last_start = path.rfind('/').map_or(0, |i| i + 1);
    let last = &path[last_start..];
    let Some(colon) = last.find(':') else {
        return Ok((path, None));
    };
    let base = &path[..last_start + colon];
    let mut stream = &last[colon + 1..];
    if let Some(s) = stream.strip_suffix(":$DATA") {
        stream = s;
    }
    if stream.contains(':') {
        return Err(FsError::InvalidPath {
            path: path.to_string(),
            detail: "a stream name cannot contain ':'".into(),
        });
    }
    Ok((base, (!stream.is_empty()).then_some(stream)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_paths() {
        assert_eq!(split_path("/").unwrap(), Vec::<&str>::new());
        assert_eq!(split_path("/a/b c/").unwrap(), vec!["a", "b c"]);
        assert!(split_path("a").is_err());
        assert!(split_path("/a//b").is_err());
        assert!(split_path("/a/../b").is_err());
    }

    #[test]
    fn splits_streams() {
        assert_eq!(split_stream("/a/b").unwrap(), ("/a/b", None));
        assert_eq!(split_stream("/a/b:s").unwrap(), ("/a/b", Some("s")));
        assert_eq!(split_stream("/a/b::$DATA").unwrap(), ("/a/b", None));
        assert_eq!(split_stream("/a/b:s:$DATA").unwrap(), ("/a/b", Some("s")));
        assert!(split_stream("/a/b:s:t").is_err());
        assert_eq!(split_stream("/a:x/b").unwrap(), ("/a:x/b", None));
    }
}
