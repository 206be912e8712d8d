//! SPF records as text: finding them, checking the `all` term, merging Herald's
//! `include:` into a record the customer already has (a domain may publish one SPF
//! record only, RFC 7208 §3.2; `all` ends evaluation, so it stays last).

/// Whether a TXT string is an SPF record (`v=spf1` then a space or the end).
pub fn is_spf(txt: &str) -> bool {
    let t = txt.trim_start();
    t.len() >= 6 && t[..6].eq_ignore_ascii_case("v=spf1") && t[6..].chars().next().is_none_or(|c| c == ' ')
}

/// The terms after `v=spf1`.
pub fn terms(record: &str) -> Vec<&str> {
    record.split_ascii_whitespace().skip(1).collect()
}

/// Whether a term is an `all` mechanism (with any qualifier).
pub fn is_all(term: &str) -> bool {
    term.trim_start_matches(['+', '-', '~', '?']).eq_ignore_ascii_case("all")
}

/// Where `all` is, if anywhere, and whether it is the last term.
pub fn all_position(record: &str) -> Option<(usize, bool)> {
    let t = terms(record);
    t.iter().position(|x| is_all(x)).map(|i| (i, i + 1 == t.len()))
}

pub fn includes(record: &str, target: &str) -> bool {
    let want = format!("include:{}", target.trim_end_matches('.'));
    terms(record).iter().any(|t| t.trim_start_matches('+').trim_end_matches('.').eq_ignore_ascii_case(&want))
}

/// One SPF record holding every term of `existing` plus `include:<include>`, with a single
/// `all` last (the first record's qualifier; `~all` when none had one and no `redirect=`).
pub fn merge(existing: &[&str], include: &str) -> String {
    let include_term = format!("include:{}", include.trim_end_matches('.'));
    let mut out: Vec<String> = vec![];
    let mut all: Option<String> = None;
    let mut redirect: Option<String> = None;
    for record in existing {
        for term in terms(record) {
            if is_all(term) {
                all.get_or_insert_with(|| term.to_owned());
            } else if term.to_ascii_lowercase().starts_with("redirect=") {
                redirect.get_or_insert_with(|| term.to_owned());
            } else if !out.iter().any(|t| t.eq_ignore_ascii_case(term)) {
                out.push(term.to_owned());
            }
        }
    }
    if !out.iter().any(|t| t.trim_start_matches('+').trim_end_matches('.').eq_ignore_ascii_case(&include_term)) {
        out.push(include_term);
    }
    let mut record = String::from("v=spf1");
    for t in &out {
        record.push(' ');
        record.push_str(t);
    }
    match (all, redirect) {
        (Some(all), _) => record.push_str(&format!(" {all}")), // `redirect=` is ignored beside `all`
        (None, Some(r)) => record.push_str(&format!(" {r}")),
        (None, None) => record.push_str(" ~all"),
    }
    record
}

/// Names an SPF record makes the receiver look up (RFC 7208 §4.6.4: at most 10):
/// `include:`, `a`, `mx`, `ptr`, `exists:` and `redirect=` each count one; the
/// `include:`/`redirect=` targets are returned to be counted recursively.
pub fn lookups(record: &str) -> (u32, Vec<String>) {
    let mut count = 0;
    let mut follow = vec![];
    for term in terms(record) {
        let t = term.trim_start_matches(['+', '-', '~', '?']).to_ascii_lowercase();
        let mech = t.split([':', '/', '=']).next().unwrap_or("");
        match mech {
            "include" | "redirect" => {
                count += 1;
                if let Some(target) = t.split_once([':', '=']).map(|(_, v)| v.to_owned()) {
                    follow.push(target);
                }
            }
            "a" | "mx" | "ptr" | "exists" => count += 1,
            _ => {}
        }
    }
    (count, follow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_spf_records() {
        assert!(is_spf("v=spf1 -all"));
        assert!(is_spf("V=SPF1"));
        assert!(!is_spf("v=spf10 -all"));
        assert!(!is_spf("google-site-verification=abc"));
    }

    #[test]
    fn all_must_be_last() {
        assert_eq!(all_position("v=spf1 mx ~all"), Some((1, true)));
        assert_eq!(all_position("v=spf1 ~all include:_spf.herald.test"), Some((0, false)));
        assert_eq!(all_position("v=spf1 mx"), None);
    }

    #[test]
    fn merge_inserts_the_include_before_the_single_all() {
        let z = "_spf.herald.test";
        assert_eq!(merge(&[], z), "v=spf1 include:_spf.herald.test ~all");
        assert_eq!(
            merge(&["v=spf1 mx ip4:192.0.2.1 -all"], z),
            "v=spf1 mx ip4:192.0.2.1 include:_spf.herald.test -all"
        );
        // Already included: unchanged apart from order.
        assert_eq!(merge(&["v=spf1 include:_spf.herald.test ~all"], z), "v=spf1 include:_spf.herald.test ~all");
        // `all` in the middle moves to the end.
        assert_eq!(merge(&["v=spf1 ~all mx"], z), "v=spf1 mx include:_spf.herald.test ~all");
        // Two records become one, duplicates dropped, the first `all` kept.
        assert_eq!(
            merge(&["v=spf1 include:_spf.google.com ~all", "v=spf1 mx include:_spf.google.com -all"], z),
            "v=spf1 include:_spf.google.com mx include:_spf.herald.test ~all"
        );
        assert_eq!(
            merge(&["v=spf1 mx redirect=_spf.example.com"], z),
            "v=spf1 mx include:_spf.herald.test redirect=_spf.example.com"
        );
        assert!(includes("v=spf1 include:_spf.herald.test. ~all", "_spf.herald.test"));
    }

    #[test]
    fn counts_lookups() {
        let (n, follow) =
            lookups("v=spf1 a mx ip4:192.0.2.0/24 include:_spf.a.test exists:%{i}.x.test redirect=b.test");
        assert_eq!(n, 5);
        assert_eq!(follow, vec!["_spf.a.test".to_owned(), "b.test".to_owned()]);
    }
}
