//! Keeping secrets out of logs, errors and `Debug` output.

/// A connection URL with its secrets replaced by `***`: the password (or lone token) of its
/// userinfo, and the value of every query parameter whose name says it holds one (`password`,
/// `sslpassword`, `token`, `secret`, `key`, ... in any case):
/// `rediss://:secret@host:6380/0` becomes `rediss://:***@host:6380/0`, and
/// `postgres://app@db/flags?password=pw` becomes `postgres://app@db/flags?password=***`.
///
/// Works for every URL shape the adapters take, including comma-separated host lists and
/// passwords holding `/`, `?`, `#` or `@` unencoded (the userinfo ends at the last `@`, so a URL
/// with an `@` in its path or query may be redacted more than needed, never less); a URL without
/// secrets comes back unchanged.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((credentials, after)) => {
            let shown = match credentials.split_once(':') {
                Some((user, _password)) => format!("{user}:***@"),
                None => "***@".to_owned(),
            };
            (shown, after)
        }
        None => (String::new(), rest),
    };
    let (location, query) = match rest.split_once('?') {
        Some((location, query)) => (location, Some(query)),
        None => (rest, None),
    };
    let mut shown = format!("{scheme}://{userinfo}{location}");
    if let Some(query) = query {
        shown.push('?');
        let parameters: Vec<String> = query
            .split('&')
            .map(|parameter| match parameter.split_once('=') {
                Some((name, _)) if names_a_secret(name) => format!("{name}=***"),
                _ => parameter.to_owned(),
            })
            .collect();
        shown.push_str(&parameters.join("&"));
    }
    shown
}

/// Whether a query parameter of this name carries a secret.
fn names_a_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["pass", "secret", "token", "key", "auth", "credential"]
        .iter()
        .any(|word| name.contains(word))
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
        // Unencoded `/`, `?`, `#` and `@` in passwords.
        assert_eq!(redact_url("redis://u:pa/ss@host/0"), "redis://u:***@host/0");
        assert_eq!(redact_url("redis://:a?b#c@host"), "redis://:***@host");
        assert_eq!(
            redact_url("postgres://app:p@s/s?w@db:5432/flags"),
            "postgres://app:***@db:5432/flags"
        );
        // Secrets in the query.
        assert_eq!(
            redact_url("postgres://app@db/flags?password=pw&sslmode=require"),
            "postgres://***@db/flags?password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://db/f?sslpassword=x&application_name=a&PASSWORD=y"),
            "postgres://db/f?sslpassword=***&application_name=a&PASSWORD=***"
        );
        assert_eq!(
            redact_url("redis+sentinel://s1:1,s2:2/m?sentinel_password=z"),
            "redis+sentinel://s1:1,s2:2/m?sentinel_password=***"
        );
    }
}
