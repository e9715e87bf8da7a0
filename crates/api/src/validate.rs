//! Validation of the record fields a client sends, shared by enrolment (multipart)
//! and updates (JSON).

use facesearch_store::{RecordFields, RecordPatch};
use serde::Deserialize;

use crate::error::ApiError;

const SHORT: usize = 256;

fn check_len(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.chars().count() > max {
        return Err(ApiError::invalid_parameter(field, format!("{field} is longer than {max} characters")));
    }
    if value.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(ApiError::invalid_parameter(field, format!("{field} contains control characters")));
    }
    Ok(())
}

/// `YYYY-MM-DD`, a real calendar date.
pub fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| {
        s.get(r).filter(|p| p.bytes().all(|c| c.is_ascii_digit())).and_then(|p| p.parse::<u32>().ok())
    };
    let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    y >= 1800 && (1..=days).contains(&d)
}

fn check_dob(dob: &str) -> Result<(), ApiError> {
    if !dob.is_empty() && !is_date(dob) {
        return Err(ApiError::invalid_parameter("dob", "dob must be a date in the form YYYY-MM-DD"));
    }
    Ok(())
}

/// The officially assigned ISO 3166-1 alpha-2 codes (249), sorted.
const ISO_3166_ALPHA2: [&str; 249] = [
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ", "BA", "BB", "BD",
    "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS", "BT", "BV", "BW", "BY", "BZ", "CA",
    "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN", "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE",
    "DJ", "DK", "DM", "DO", "DZ", "EC", "EE", "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA",
    "GB", "GD", "GE", "GF", "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK",
    "HM", "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM", "JO", "JP",
    "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC", "LI", "LK", "LR", "LS", "LT",
    "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK", "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS",
    "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA", "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ",
    "OM", "PA", "PE", "PF", "PG", "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS",
    "RU", "RW", "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS", "ST",
    "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO", "TR", "TT", "TV", "TW",
    "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI", "VN", "VU", "WF", "WS", "YE", "YT", "ZA",
    "ZM", "ZW",
];

fn check_nationality(n: &str) -> Result<(), ApiError> {
    if !n.is_empty() && ISO_3166_ALPHA2.binary_search(&n).is_err() {
        return Err(ApiError::invalid_parameter(
            "nationality",
            "nationality must be an ISO 3166-1 alpha-2 code such as IN or FR",
        ));
    }
    Ok(())
}

/// Splits a comma-separated watch list, trimming items and dropping empty ones.
pub fn split_watch_list(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::to_string).collect()
}

fn check_watch_list(items: &[String]) -> Result<(), ApiError> {
    if items.len() > 64 {
        return Err(ApiError::invalid_parameter("watch_list", "at most 64 watch-list categories are accepted"));
    }
    for item in items {
        if item.trim().is_empty() || item.contains(',') {
            return Err(ApiError::invalid_parameter(
                "watch_list",
                "watch-list categories must be non-empty and contain no commas",
            ));
        }
        check_len("watch_list", item, 64)?;
    }
    Ok(())
}

pub fn check_reference(r: &str) -> Result<(), ApiError> {
    check_len("reference", r, SHORT)
}

/// Checks every field of a new record.
pub fn check_fields(f: &RecordFields) -> Result<(), ApiError> {
    check_len("name", &f.name, SHORT)?;
    check_dob(&f.dob)?;
    check_nationality(&f.nationality)?;
    check_len("gender", &f.gender, 32)?;
    check_len("id_no", &f.id_no, 128)?;
    check_len("address", &f.address, 1024)?;
    check_len("additional_info", &f.additional_info, 8192)?;
    check_watch_list(&f.watch_list)
}

/// The JSON body of `PATCH …/records/{id}`: any record field; absent fields stay as
/// they are.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordPatchBody {
    /// At most 256 characters.
    pub name: Option<String>,
    /// `YYYY-MM-DD` (a real date) or empty.
    pub dob: Option<String>,
    /// ISO 3166-1 alpha-2 or empty.
    pub nationality: Option<String>,
    /// At most 32 characters.
    pub gender: Option<String>,
    /// At most 128 characters.
    pub id_no: Option<String>,
    /// At most 1024 characters.
    pub address: Option<String>,
    /// At most 64 categories of at most 64 characters, no commas.
    pub watch_list: Option<Vec<String>>,
    /// At most 8192 characters.
    pub additional_info: Option<String>,
    /// The client's own id, unique per index; `""` removes it.
    pub reference: Option<String>,
}

impl RecordPatchBody {
    pub fn validate(self) -> Result<RecordPatch, ApiError> {
        let text =
            |field: &str, v: &Option<String>, max: usize| v.as_deref().map_or(Ok(()), |v| check_len(field, v, max));
        text("name", &self.name, SHORT)?;
        self.dob.as_deref().map_or(Ok(()), check_dob)?;
        self.nationality.as_deref().map_or(Ok(()), check_nationality)?;
        text("gender", &self.gender, 32)?;
        text("id_no", &self.id_no, 128)?;
        text("address", &self.address, 1024)?;
        text("additional_info", &self.additional_info, 8192)?;
        text("reference", &self.reference, SHORT)?;
        let watch_list = self.watch_list.map(|l| l.into_iter().map(|s| s.trim().to_string()).collect::<Vec<_>>());
        watch_list.as_deref().map_or(Ok(()), check_watch_list)?;
        Ok(RecordPatch {
            name: self.name,
            dob: self.dob,
            nationality: self.nationality,
            gender: self.gender,
            id_no: self.id_no,
            address: self.address,
            watch_list,
            additional_info: self.additional_info,
            reference: self.reference,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        for ok in ["1990-01-15", "2000-02-29", "1800-12-31"] {
            assert!(is_date(ok), "{ok}");
        }
        for bad in [
            "1990-1-15",
            "1900-02-29",
            "1990-13-01",
            "1990-04-31",
            "abcd-ef-gh",
            "1990/01/15",
            "19900115",
            "+990-01-15",
        ] {
            assert!(!is_date(bad), "{bad}");
        }
    }

    #[test]
    fn fields() {
        let ok = RecordFields {
            name: "Jane".into(),
            dob: "1990-01-15".into(),
            nationality: "IN".into(),
            watch_list: vec!["pep".into()],
            ..Default::default()
        };
        assert!(check_fields(&ok).is_ok());
        for bad in [
            RecordFields { nationality: "India".into(), ..Default::default() },
            RecordFields { nationality: "XX".into(), ..Default::default() },
            RecordFields { nationality: "in".into(), ..Default::default() },
            RecordFields { dob: "15/01/1990".into(), ..Default::default() },
            RecordFields { name: "x".repeat(300), ..Default::default() },
            RecordFields { watch_list: vec!["a,b".into()], ..Default::default() },
            RecordFields { name: "a\u{0}b".into(), ..Default::default() },
        ] {
            assert!(check_fields(&bad).is_err(), "{bad:?}");
        }
        assert_eq!(split_watch_list(" sanctions, ,pep "), vec!["sanctions", "pep"]);
    }
}
