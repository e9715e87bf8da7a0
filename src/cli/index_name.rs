//! Naming an index on the command line: by its id or by its unique name, one rule for
//! the HTTP client commands and the local `user` command.

/// An index as the rule sees it.
pub struct Candidate {
    pub id: String,
    pub name: String,
}

/// Why `given` names no single index.
pub enum NotOne {
    /// No index has that id or name; `listing` names the candidates (at most 20).
    Unknown { listing: String },
    /// Several indexes have that name (ignoring case); `listing` names them.
    Ambiguous { listing: String },
}

/// The id of the index `given` names among `candidates`: its id, else its name (exact,
/// else ignoring case when no name matches exactly).
pub fn resolve(candidates: &[Candidate], given: &str) -> Result<String, NotOne> {
    if candidates.iter().any(|c| c.id == given) {
        return Ok(given.to_string());
    }
    let exact: Vec<&Candidate> = candidates.iter().filter(|c| c.name == given).collect();
    let matches = if exact.is_empty() {
        candidates.iter().filter(|c| c.name.eq_ignore_ascii_case(given)).collect()
    } else {
        exact
    };
    match matches.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => Err(NotOne::Unknown { listing: listing(&candidates.iter().collect::<Vec<_>>()) }),
        several => Err(NotOne::Ambiguous { listing: listing(several) }),
    }
}

/// `name (id), …`, sorted, at most 20 named.
fn listing(list: &[&Candidate]) -> String {
    let mut names: Vec<String> = list.iter().map(|c| format!("{} ({})", c.name, c.id)).collect();
    names.sort();
    if names.len() > 20 {
        let more = names.len() - 20;
        names.truncate(20);
        names.push(format!("and {more} more"));
    }
    if names.is_empty() { "none".to_string() } else { names.join(", ") }
}

/// Whether `s` has the form of an index id (a UUID: 8-4-4-4-12 hexadecimal digits).
pub fn uuid_like(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, name: &str) -> Candidate {
        Candidate { id: id.into(), name: name.into() }
    }

    #[test]
    fn ids_then_exact_names_then_names_ignoring_case() {
        let all = [c("1", "customers"), c("2", "Staff-A"), c("3", "staff-a"), c("4", "Guests")];
        assert!(matches!(resolve(&all, "3").as_deref(), Ok("3")));
        assert!(matches!(resolve(&all, "customers").as_deref(), Ok("1")));
        assert!(matches!(resolve(&all, "CUSTOMERS").as_deref(), Ok("1")));
        assert!(matches!(resolve(&all, "staff-a").as_deref(), Ok("3")), "an exact name wins");
        match resolve(&all, "STAFF-A") {
            Err(NotOne::Ambiguous { listing }) => assert_eq!(listing, "Staff-A (2), staff-a (3)"),
            _ => panic!("ambiguous"),
        }
        match resolve(&all, "suppliers") {
            Err(NotOne::Unknown { listing }) => assert!(listing.starts_with("Guests (4), Staff-A (2)"), "{listing}"),
            _ => panic!("unknown"),
        }
        assert!(matches!(resolve(&[], "x"), Err(NotOne::Unknown { listing }) if listing == "none"));
        assert!(uuid_like("2142c93f-449f-4410-8ec2-ddeb15292771") && !uuid_like("customers"));
    }
}
