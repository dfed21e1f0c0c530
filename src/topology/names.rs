//! Name rules, node-name templates and "did you mean" hints.

use super::MAX_NAME_LEN;

/// Longest lab name: it prefixes every namespace name of the lab.
pub const MAX_LAB_NAME_LEN: usize = 12;

/// Checks a node, group, segment, link or profile name:
/// `[a-z0-9][a-z0-9_-]*`, at most [`MAX_NAME_LEN`] characters. `what` names
/// the thing for the message ("node", "segment", ...).
pub(crate) fn check_name(name: &str, what: &str) -> Result<(), String> {
    check(name, what, MAX_NAME_LEN, |c| c == '-' || c == '_').map_err(|rule| {
        format!("{rule}; {what} names are lowercase letters, digits, '-' and '_', starting with a letter or digit, at most {MAX_NAME_LEN} characters")
    })
}

/// Checks a lab name: `[a-z0-9][a-z0-9-]*`, at most [`MAX_LAB_NAME_LEN`]
/// characters, because it prefixes namespace names.
pub fn check_lab_name(name: &str) -> Result<(), String> {
    check(name, "lab", MAX_LAB_NAME_LEN, |c| c == '-').map_err(|rule| {
        format!("{rule}; lab names are lowercase letters, digits and '-', starting with a letter or digit, at most {MAX_LAB_NAME_LEN} characters")
    })
}

/// The first rule `name` breaks, as the start of a message.
fn check(name: &str, what: &str, max: usize, extra: fn(char) -> bool) -> Result<(), String> {
    let plain = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let len = name.chars().count();
    match name.chars().next() {
        None => Err(format!("empty {what} name")),
        _ if len > max => Err(format!("{what} name \"{name}\" is {len} characters long")),
        Some(first) if !plain(first) => Err(format!(
            "invalid {what} name \"{name}\": it starts with '{first}'"
        )),
        _ => match name.chars().find(|&c| !plain(c) && !extra(c)) {
            Some(bad) => Err(format!(
                "invalid {what} name \"{name}\": '{bad}' is not allowed"
            )),
            None => Ok(()),
        },
    }
}

/// A group's node-name template: text around exactly one index placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    prefix: String,
    /// Zero-pad the index to this many digits (`{:0N}`); 0 for `{}`.
    width: usize,
    suffix: String,
}

impl Template {
    /// Parses `"v{:03}"` or `"car-{}"`: exactly one placeholder, either `{}`
    /// or `{:0N}` with N from 1 to 9, and no other braces.
    pub fn parse(template: &str) -> Result<Template, String> {
        let expected = "expected exactly one placeholder, {} or {:0N} (e.g. \"v{:03}\")";
        let open = template
            .find('{')
            .ok_or_else(|| format!("template \"{template}\" has no placeholder; {expected}"))?;
        let close = template[open..]
            .find('}')
            .map(|i| open + i)
            .ok_or_else(|| format!("template \"{template}\" has an unclosed '{{'; {expected}"))?;
        let (prefix, suffix) = (&template[..open], &template[close + 1..]);
        if [prefix, suffix].iter().any(|s| s.contains(['{', '}'])) {
            return Err(format!(
                "template \"{template}\" has more than one placeholder or a stray brace; {expected}"
            ));
        }
        let width = parse_spec(&template[open + 1..close]).ok_or_else(|| {
            format!("template \"{template}\" has an unsupported placeholder; {expected}")
        })?;
        Ok(Template {
            prefix: prefix.to_string(),
            width,
            suffix: suffix.to_string(),
        })
    }

    /// The name of the node with this index.
    pub fn render(&self, index: u64) -> String {
        format!(
            "{}{index:0width$}{}",
            self.prefix,
            self.suffix,
            width = self.width
        )
    }
}

/// `""` -> width 0, `":03"` -> width 3; anything else is unsupported.
fn parse_spec(spec: &str) -> Option<usize> {
    if spec.is_empty() {
        return Some(0);
    }
    let digits = spec.strip_prefix(":0")?;
    match digits.parse::<usize>() {
        Ok(width @ 1..=9) if digits.bytes().all(|b| b.is_ascii_digit()) => Some(width),
        _ => None,
    }
}

/// `; did you mean "x"?` when one of `known` is close to `name`, else "".
pub(crate) fn did_you_mean<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    let limit = (name.chars().count() / 3).max(1);
    known
        .into_iter()
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, k)| format!("; did you mean \"{k}\"?"))
        .unwrap_or_default()
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("v001", "node").is_ok());
        assert!(check_name("s-temp_1", "node").is_ok());
        assert!(check_name("", "node").is_err());
        assert!(check_name("-a", "node").is_err());
        assert!(check_name("A", "node").is_err());
        assert!(check_name(&"a".repeat(33), "node").is_err());
        assert!(check_lab_name("city").is_ok());
        assert!(check_lab_name("a_b").is_err());
        assert!(check_lab_name("abcdefghijklm").is_err());
    }

    #[test]
    fn templates() {
        let t = Template::parse("v{:03}").unwrap();
        assert_eq!(t.render(7), "v007");
        assert_eq!(t.render(1234), "v1234");
        assert_eq!(Template::parse("car-{}-x").unwrap().render(12), "car-12-x");
        for bad in [
            "v", "v{", "v{}{}", "v{:3}", "v{x}", "}{}", "v{:0}", "v{:010}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hints() {
        assert_eq!(
            did_you_mean("rsu", ["rsu1", "r1"]),
            "; did you mean \"rsu1\"?"
        );
        assert_eq!(did_you_mean("zzzzzz", ["rsu1"]), "");
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
