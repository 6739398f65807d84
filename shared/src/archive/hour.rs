//! One UTC hour of GH Archive: its names (the file GH Archive serves, the object it is kept
//! as) and how it is written on a command line.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc};

/// One UTC hour of GH Archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hour(DateTime<Utc>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not an hour: {reason} (expected e.g. 2015-01-01T00 or 2015-01-01-0)")]
pub struct HourParseError {
    pub input: String,
    pub reason: String,
}

impl Hour {
    /// Accepts "2015-01-01T00", "2015-01-01T0", "2015-01-01-0" and "2015-01-01-00"; errors
    /// name the input.
    pub fn parse(s: &str) -> Result<Hour, HourParseError> {
        let err = |reason: &str| HourParseError {
            input: s.to_owned(),
            reason: reason.to_owned(),
        };
        let t = s.trim();
        if t.len() < 12 || !t.is_char_boundary(10) {
            return Err(err("too short"));
        }
        let (date, rest) = t.split_at(10);
        let date =
            NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|e| err(&format!("date: {e}")))?;
        let hour = rest
            .strip_prefix('T')
            .or_else(|| rest.strip_prefix('-'))
            .ok_or_else(|| err("expected T or - between the date and the hour"))?;
        if hour.is_empty() || hour.len() > 2 || !hour.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("the hour must be 1 or 2 digits"));
        }
        let h: u32 = hour.parse().map_err(|_| err("the hour must be a number"))?;
        if h > 23 {
            return Err(err("the hour must be 0 to 23"));
        }
        let t = date
            .and_hms_opt(h, 0, 0)
            .ok_or_else(|| err("no such time"))?;
        Ok(Hour(Utc.from_utc_datetime(&t)))
    }

    /// The hour `t` falls in.
    pub fn from_datetime(t: DateTime<Utc>) -> Hour {
        let t = t
            .with_nanosecond(0)
            .and_then(|t| t.with_second(0))
            .and_then(|t| t.with_minute(0))
            .expect("an hour's start exists");
        Hour(t)
    }

    pub fn start(self) -> DateTime<Utc> {
        self.0
    }

    /// The instant the hour ends (the next one's start).
    pub fn end(self) -> DateTime<Utc> {
        self.0 + Duration::hours(1)
    }

    pub fn next(self) -> Hour {
        Hour(self.end())
    }

    pub fn prev(self) -> Hour {
        Hour(self.0 - Duration::hours(1))
    }

    /// GH Archive's file name: the hour without a leading zero.
    pub fn file_name(self) -> String {
        format!(
            "{:04}-{:02}-{:02}-{}.json.gz",
            self.0.year(),
            self.0.month(),
            self.0.day(),
            self.0.hour()
        )
    }

    /// Where the hour's file is kept in the raw object store.
    pub fn object_key(self, prefix: &str) -> String {
        format!("{prefix}archive/{}.json.gz", self.0.format("%Y/%m/%d/%H"))
    }

    /// Every hour of [from, to).
    pub fn range(from: Hour, to: Hour) -> impl Iterator<Item = Hour> {
        std::iter::successors(Some(from), |h| Some(h.next())).take_while(move |h| *h < to)
    }
}

impl std::fmt::Display for Hour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%dT%H"))
    }
}

impl std::str::FromStr for Hour {
    type Err = HourParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Hour::parse(s)
    }
}

impl serde::Serialize for Hour {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Hour {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Hour::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_accepted_spelling_is_the_same_hour() {
        let want = Hour::parse("2015-01-01T00").unwrap();
        for s in [
            "2015-01-01T0",
            "2015-01-01-0",
            "2015-01-01-00",
            " 2015-01-01T00 ",
        ] {
            assert_eq!(Hour::parse(s).unwrap(), want, "{s}");
        }
        assert_eq!(want.to_string(), "2015-01-01T00");
        assert_eq!(
            want.start(),
            Utc.with_ymd_and_hms(2015, 1, 1, 0, 0, 0).unwrap()
        );
    }

    #[test]
    fn names_follow_gh_archive_and_the_object_layout() {
        let h = Hour::parse("2015-01-01T09").unwrap();
        assert_eq!(h.file_name(), "2015-01-01-9.json.gz");
        assert_eq!(h.object_key("raw/"), "raw/archive/2015/01/01/09.json.gz");
        let last = Hour::parse("2015-12-31T23").unwrap();
        assert_eq!(last.next().to_string(), "2016-01-01T00");
        assert_eq!(last.next().file_name(), "2016-01-01-0.json.gz");
        assert_eq!(last.next().prev(), last);
    }

    #[test]
    fn bad_input_is_named_with_the_reason() {
        for (s, reason) in [
            ("2015-01-01T24", "0 to 23"),
            ("2015-13-01T00", "date"),
            ("2015-01-01 00", "T or -"),
            ("2015-01-01T001", "1 or 2 digits"),
            ("yesterday", "too short"),
        ] {
            let e = Hour::parse(s).unwrap_err().to_string();
            assert!(e.contains(&format!("{s:?}")), "{e}");
            assert!(e.contains(reason), "{s}: {e}");
        }
    }

    #[test]
    fn truncation_range_and_serde() {
        let t = Utc.with_ymd_and_hms(2026, 6, 1, 15, 42, 7).unwrap();
        let h = Hour::from_datetime(t);
        assert_eq!(h.to_string(), "2026-06-01T15");
        let hours: Vec<String> = Hour::range(h, h.next().next().next())
            .map(|h| h.to_string())
            .collect();
        assert_eq!(hours, ["2026-06-01T15", "2026-06-01T16", "2026-06-01T17"]);
        let json = serde_json::json!({ "hour": h });
        assert_eq!(json.to_string(), r#"{"hour":"2026-06-01T15"}"#);
        let back: Hour = serde_json::from_value(json["hour"].clone()).unwrap();
        assert_eq!(back, h);
    }
}
