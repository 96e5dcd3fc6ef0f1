//! Keeping secrets out of logs, errors and `Debug` output.

/// A connection URL with its password (or lone token) replaced by `***`:
/// `rediss://:secret@host:6380/0` becomes `rediss://:***@host:6380/0`.
///
/// Works for every URL shape the adapters take, including comma-separated host lists; a URL
/// without credentials comes back unchanged.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((credentials, hosts)) => {
            let shown = match credentials.split_once(':') {
                Some((user, _password)) => format!("{user}:***"),
                None => "***".to_owned(),
            };
            format!("{scheme}://{shown}@{hosts}{tail}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("rediss://:secret@host:6380/0"),
            "rediss://:***@host:6380/0"
        );
        assert_eq!(
            redact_url("postgres://app:pw@db/flags"),
            "postgres://app:***@db/flags"
        );
        assert_eq!(redact_url("redis://token@host"), "redis://***@host");
        assert_eq!(
            redact_url("redis+cluster://u:p@a:1,b:2"),
            "redis+cluster://u:***@a:1,b:2"
        );
        assert_eq!(redact_url("redis://u:p@ss@host/0"), "redis://u:***@host/0");
        assert_eq!(
            redact_url("sqlite://flags.db?mode=rwc"),
            "sqlite://flags.db?mode=rwc"
        );
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
