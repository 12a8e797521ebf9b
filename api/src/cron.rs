//! Cron schedules as Kubernetes' CronJob and OpenKruise's AdvancedCronJob read
//! them (robfig/cron's standard parser): five fields (minute, hour, day of
//! month, month, day of week) or a macro (`@hourly`, `@every 90m`, ...),
//! optionally after a `TZ=zone` or `CRON_TZ=zone` prefix. Fire times are
//! whole minutes of the wall clock in an IANA zone.

use std::fmt;
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// A parsed schedule, and the zone its `TZ=` prefix named, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    rule: Rule,
    /// The zone of a `TZ=` or `CRON_TZ=` prefix.
    pub prefix_zone: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Rule {
    Fields(Fields),
    /// `@every <duration>`: from the last run (or creation), every this long.
    Every(Duration),
}

/// One bit per allowed value of each field.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Fields {
    minute: u64,
    hour: u64,
    day_of_month: u64,
    month: u64,
    day_of_week: u64,
    /// A day field given as `*` or `?`: cron then requires only the other one.
    day_of_month_any: bool,
    day_of_week_any: bool,
}

/// What is wrong with a schedule, and where: `column` counts characters from 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CronError {
    pub column: usize,
    pub message: String,
}

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at column {}: {}", self.column, self.message)
    }
}

struct FieldKind {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const FIELDS: [FieldKind; 5] = [
    FieldKind {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    FieldKind {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    FieldKind {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
    },
    FieldKind {
        name: "month",
        min: 1,
        max: 12,
        names: &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ],
    },
    FieldKind {
        name: "day of week",
        min: 0,
        max: 6,
        names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    },
];

const MACROS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

/// Schedules are searched this far ahead; one that never fires within it never fires.
const SEARCH_YEARS: i16 = 5;

impl Schedule {
    pub fn parse(text: &str) -> Result<Self, CronError> {
        let (offset, prefix_zone, rest) = split_zone_prefix(text)?;
        let leading = rest.len() - rest.trim_start().len();
        let body = rest.trim();
        let column = offset + rest[..leading].chars().count() + 1;
        if body.is_empty() {
            return Err(CronError {
                column,
                message: "the schedule is empty; write five fields (minute hour day-of-month month day-of-week), such as \"0 2 * * *\", or a macro such as @daily".into(),
            });
        }
        let rule = if let Some(every) = body.strip_prefix("@every ") {
            Rule::Every(every_duration(every.trim(), column + "@every ".len())?)
        } else if body.starts_with('@') {
            let lower = body.to_ascii_lowercase();
            let Some((_, fields)) = MACROS.iter().find(|(name, _)| *name == lower) else {
                let known: Vec<&str> = MACROS.iter().map(|(name, _)| *name).collect();
                return Err(CronError {
                    column,
                    message: format!(
                        "unknown macro {body:?}; accepted: {}, @every <duration>",
                        known.join(", ")
                    ),
                });
            };
            Rule::Fields(parse_fields(fields, 1).map_err(|e| CronError { column, ..e })?)
        } else {
            Rule::Fields(parse_fields(body, column)?)
        };
        Ok(Self { rule, prefix_zone })
    }

    /// The first fire time strictly after `after`, read on `zone`'s wall
    /// clock; `None` when there is none within five years (`0 0 30 2 *`).
    /// A time the clock skips (a DST gap) fires at the same offset past the
    /// gap; a time it repeats fires once, the first time.
    pub fn next_after(&self, after: Timestamp, zone: &TimeZone) -> Option<Timestamp> {
        let fields = match &self.rule {
            Rule::Every(every) => {
                let every = i64::try_from(every.as_secs()).ok()?;
                return after.checked_add(every.seconds()).ok();
            }
            Rule::Fields(fields) => fields,
        };
        let local = after.to_zoned(zone.clone()).datetime();
        let mut at = local
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        let last_year = at.year().saturating_add(SEARCH_YEARS);
        while at.year() <= last_year {
            at = if !has(fields.month, at.month()) {
                at.date()
                    .first_of_month()
                    .checked_add(1.month())
                    .ok()?
                    .to_datetime(jiff::civil::Time::midnight())
            } else if !fields.day_matches(at.date()) {
                at.date().tomorrow().ok()?.to_datetime(jiff::civil::Time::midnight())
            } else if !has(fields.hour, at.hour()) {
                at.with().minute(0).build().ok()?.checked_add(1.hour()).ok()?
            } else if !has(fields.minute, at.minute()) {
                at.checked_add(1.minute()).ok()?
            } else {
                match zone.to_zoned(at).map(|z| z.timestamp()) {
                    Ok(fire) if fire > after => return Some(fire),
                    _ => at.checked_add(1.minute()).ok()?,
                }
            };
        }
        None
    }

    /// The latest fire time in `(earliest, now]`: the one run a controller
    /// that was away catches up on. Searching back from `now` in widening
    /// windows keeps this cheap however long ago `earliest` was.
    pub fn latest_missed(&self, earliest: Timestamp, now: Timestamp, zone: &TimeZone) -> Option<Timestamp> {
        if earliest >= now {
            return None;
        }
        if let Rule::Every(every) = &self.rule {
            let every = i64::try_from(every.as_secs()).ok().filter(|s| *s > 0)?;
            let elapsed = now.as_second() - earliest.as_second();
            let runs = elapsed / every;
            return (runs > 0)
                .then(|| earliest.checked_add((runs * every).seconds()).ok())
                .flatten();
        }
        const WINDOWS_HOURS: [i64; 5] = [1, 24, 32 * 24, 367 * 24, 5 * 367 * 24];
        for hours in WINDOWS_HOURS {
            let from = now
                .checked_sub(hours.hours())
                .map_or(earliest, |from| from.max(earliest));
            let mut latest = None;
            let mut cursor = from;
            while let Some(fire) = self.next_after(cursor, zone).filter(|fire| *fire <= now) {
                latest = Some(fire);
                cursor = fire;
            }
            if latest.is_some() || from == earliest {
                return latest;
            }
        }
        None
    }
}

impl Fields {
    /// Vixie cron: when both day fields are restricted, either may match.
    fn day_matches(&self, date: jiff::civil::Date) -> bool {
        let day_of_month = has(self.day_of_month, date.day());
        let day_of_week = has(self.day_of_week, date.weekday().to_sunday_zero_offset());
        if self.day_of_month_any || self.day_of_week_any {
            day_of_month && day_of_week
        } else {
            day_of_month || day_of_week
        }
    }
}

fn has(bits: u64, value: i8) -> bool {
    u32::try_from(value).is_ok_and(|v| v < 64 && bits & (1 << v) != 0)
}

/// `TZ=Europe/Berlin 0 6 * * *`: (columns before the rest, the zone, the rest).
fn split_zone_prefix(text: &str) -> Result<(usize, Option<String>, &str), CronError> {
    let trimmed = text.trim_start();
    let lead = text.len() - trimmed.len();
    let Some(after) = trimmed.strip_prefix("CRON_TZ=").or_else(|| trimmed.strip_prefix("TZ=")) else {
        return Ok((0, None, text));
    };
    let prefix_len = trimmed.len() - after.len();
    let zone_len = after.find(char::is_whitespace).unwrap_or(after.len());
    let zone = &after[..zone_len];
    if zone.is_empty() {
        return Err(CronError {
            column: text[..lead + prefix_len].chars().count() + 1,
            message: "the TZ= prefix names no zone; write an IANA zone such as TZ=Europe/Berlin, or use spec.timeZone"
                .into(),
        });
    }
    let consumed = lead + prefix_len + zone_len;
    Ok((
        text[..consumed].chars().count(),
        Some(zone.to_owned()),
        &text[consumed..],
    ))
}

fn every_duration(text: &str, column: usize) -> Result<Duration, CronError> {
    let every = crate::duration::parse(text).map_err(|message| CronError { column, message })?;
    if every < Duration::from_secs(1) {
        return Err(CronError {
            column,
            message: format!("@every {text} is shorter than one second; use a duration such as 30m or 6h"),
        });
    }
    Ok(every)
}

fn parse_fields(body: &str, column: usize) -> Result<Fields, CronError> {
    let mut parts = Vec::new();
    let mut start = None;
    for (i, c) in body.char_indices().chain([(body.len(), ' ')]) {
        match (c.is_whitespace(), start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                parts.push((column + body[..s].chars().count(), &body[s..i]));
                start = None;
            }
            _ => {}
        }
    }
    if parts.len() != FIELDS.len() {
        return Err(CronError {
            column,
            message: format!(
                "expected exactly 5 fields (minute hour day-of-month month day-of-week), found {}: {body:?}",
                parts.len()
            ),
        });
    }
    let mut bits = [0u64; 5];
    let mut any = [false; 5];
    for (i, (kind, (at, text))) in FIELDS.iter().zip(&parts).enumerate() {
        (bits[i], any[i]) = parse_field(kind, text, *at)?;
    }
    Ok(Fields {
        minute: bits[0],
        hour: bits[1],
        day_of_month: bits[2],
        month: bits[3],
        day_of_week: bits[4],
        day_of_month_any: any[2],
        day_of_week_any: any[4],
    })
}

/// One field: comma-separated `*`, `?`, `a`, `a-b`, each with an optional `/step`.
/// Returns the allowed values and whether the field is unrestricted.
fn parse_field(kind: &FieldKind, text: &str, column: usize) -> Result<(u64, bool), CronError> {
    let mut bits = 0;
    let mut any = false;
    let mut offset = 0;
    for part in text.split(',') {
        let at = column + text[..offset].chars().count();
        offset += part.len() + 1;
        let error = |why: String| CronError {
            column: at,
            message: format!(
                "{} field {part:?}: {why}; accepted: {}-{}{}, *, ranges a-b, steps */n or a-b/n, lists a,b",
                kind.name,
                kind.min,
                kind.max,
                if kind.names.is_empty() {
                    String::new()
                } else {
                    format!(
                        " or {}-{}",
                        kind.names[0].to_uppercase(),
                        kind.names[kind.names.len() - 1].to_uppercase()
                    )
                }
            ),
        };
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .map_err(|_| error(format!("the step {step:?} is not a number")))?;
                if step == 0 {
                    return Err(error("the step must be a positive number".into()));
                }
                (range, Some(step))
            }
            None => (part, None),
        };
        if range.contains('/') {
            return Err(error("too many slashes".into()));
        }
        let (start, end, star) = if range == "*" || range == "?" {
            (kind.min, kind.max, true)
        } else {
            let value = |v: &str| {
                value(kind, v).ok_or_else(|| {
                    error(if v.is_empty() {
                        "a value is missing".into()
                    } else {
                        format!("{v:?} is not a {}", kind.name)
                    })
                })
            };
            match range.split_once('-') {
                Some((low, high)) => (value(low)?, value(high)?, false),
                // `5/15` means 5 to the end, every 15.
                None => {
                    let low = value(range)?;
                    (low, if step.is_some() { kind.max } else { low }, false)
                }
            }
        };
        if start < kind.min {
            return Err(error(format!("{start} is below the minimum {}", kind.min)));
        }
        if end > kind.max {
            return Err(error(format!("{end} is above the maximum {}", kind.max)));
        }
        if start > end {
            return Err(error(format!("the range starts at {start}, beyond its end {end}")));
        }
        let step = step.unwrap_or(1);
        any |= star && step == 1;
        let mut v = start;
        while v <= end {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, any))
}

fn value(kind: &FieldKind, text: &str) -> Option<u32> {
    if let Ok(number) = text.parse::<u32>() {
        return Some(number);
    }
    let lower = text.to_ascii_lowercase();
    let index = kind.names.iter().position(|name| *name == lower)?;
    u32::try_from(index).ok().map(|i| i + kind.min)
}

/// The zone a schedule runs in: the `TZ=` prefix, else `timeZone`, else UTC
/// (the zone of the controller's container).
pub fn zone(schedule: &Schedule, time_zone: Option<&str>) -> Result<TimeZone, String> {
    match schedule.prefix_zone.as_deref().or(time_zone) {
        None => Ok(TimeZone::UTC),
        Some(name) => load_zone(name),
    }
}

/// An IANA zone by name. `Local` is refused, as by Kubernetes: the schedule
/// would follow whatever zone the controller's machine has.
pub fn load_zone(name: &str) -> Result<TimeZone, String> {
    if name.eq_ignore_ascii_case("local") {
        return Err("must be an explicit IANA time zone such as Europe/Berlin or America/New_York, not Local".into());
    }
    TimeZone::get(name).map_err(|_| {
        format!("unknown time zone {name:?}; use an IANA name such as UTC, Europe/Berlin or Asia/Shanghai")
    })
}

#[cfg(test)]
mod tests;
