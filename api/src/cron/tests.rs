//! Cron schedules: fire times, zones and daylight saving, errors.

use super::*;

fn at(text: &str) -> Timestamp {
    text.parse().unwrap_or(Timestamp::UNIX_EPOCH)
}

fn next(schedule: &str, after: &str, zone: &str) -> Option<String> {
    let schedule = Schedule::parse(schedule).ok()?;
    let zone = super::zone(&schedule, Some(zone)).ok()?;
    schedule.next_after(at(after), &zone).map(|t| t.to_string())
}

#[test]
fn fields_macros_and_steps_fire_when_cron_would() {
    assert_eq!(
        next("* * * * *", "2026-12-02T10:00:00Z", "UTC").as_deref(),
        Some("2026-12-02T10:01:00Z")
    );
    assert_eq!(
        next("* * * * *", "2026-12-02T10:00:30Z", "UTC").as_deref(),
        Some("2026-12-02T10:01:00Z")
    );
    assert_eq!(
        next("*/15 * * * *", "2026-12-02T10:16:00Z", "UTC").as_deref(),
        Some("2026-12-02T10:30:00Z")
    );
    assert_eq!(
        next("5/20 * * * *", "2026-12-02T10:26:00Z", "UTC").as_deref(),
        Some("2026-12-02T10:45:00Z")
    );
    assert_eq!(
        next("0 2 * * *", "2026-12-02T10:00:00Z", "UTC").as_deref(),
        Some("2026-12-03T02:00:00Z")
    );
    assert_eq!(
        next("@hourly", "2026-12-02T10:00:00Z", "UTC").as_deref(),
        Some("2026-12-02T11:00:00Z")
    );
    assert_eq!(
        next("@yearly", "2026-12-02T10:00:00Z", "UTC").as_deref(),
        Some("2027-01-01T00:00:00Z")
    );
    // 2026-12-02 is a Wednesday.
    assert_eq!(
        next("0 9 * * MON-FRI", "2026-12-04T10:00:00Z", "UTC").as_deref(),
        Some("2026-12-07T09:00:00Z")
    );
    assert_eq!(
        next("0 0 1 JAN,jul *", "2026-12-02T10:00:00Z", "UTC").as_deref(),
        Some("2027-01-01T00:00:00Z")
    );
    // Both day fields restricted: either matches (the 15th, or a Monday).
    assert_eq!(
        next("0 0 15 * 1", "2026-12-02T10:00:00Z", "UTC").as_deref(),
        Some("2026-12-07T00:00:00Z")
    );
    // One of them `*`: only the other counts.
    assert_eq!(
        next("0 0 15 * *", "2026-12-02T10:00:00Z", "UTC").as_deref(),
        Some("2026-12-15T00:00:00Z")
    );
    assert_eq!(
        next("0 0 29 2 *", "2026-12-02T10:00:00Z", "UTC").as_deref(),
        Some("2028-02-29T00:00:00Z")
    );
    assert_eq!(next("0 0 30 2 *", "2026-12-02T10:00:00Z", "UTC"), None);
    assert_eq!(
        next("@every 90m", "2026-12-02T10:00:00Z", "UTC").as_deref(),
        Some("2026-12-02T11:30:00Z")
    );
}

#[test]
fn zones_read_the_wall_clock_through_daylight_saving() {
    assert_eq!(
        next("0 6 * * *", "2026-12-02T10:00:00Z", "Asia/Shanghai").as_deref(),
        Some("2026-12-02T22:00:00Z")
    );
    assert_eq!(
        next("TZ=Asia/Shanghai 0 6 * * *", "2026-12-02T10:00:00Z", "UTC").as_deref(),
        Some("2026-12-02T22:00:00Z")
    );
    // Berlin springs forward on 2027-03-28 at 02:00: 02:30 does not exist that day.
    assert_eq!(
        next("30 2 * * *", "2027-03-27T12:00:00Z", "Europe/Berlin").as_deref(),
        Some("2027-03-28T01:30:00Z")
    );
    // ...and falls back on 2027-10-31, repeating 02:00-03:00: 02:30 runs once.
    let schedule = Schedule::parse("30 2 * * *").ok();
    let berlin = TimeZone::get("Europe/Berlin").ok();
    if let (Some(schedule), Some(berlin)) = (schedule, berlin) {
        let first = schedule.next_after(at("2027-10-30T12:00:00Z"), &berlin);
        assert_eq!(first.map(|t| t.to_string()).as_deref(), Some("2027-10-31T00:30:00Z"));
        let second = first.and_then(|t| schedule.next_after(t, &berlin));
        assert_eq!(second.map(|t| t.to_string()).as_deref(), Some("2027-11-01T01:30:00Z"));
    } else {
        panic!("schedule or zone did not load");
    }
}

#[test]
fn the_latest_missed_run_is_found_however_long_ago() {
    let utc = TimeZone::UTC;
    let minutely = Schedule::parse("* * * * *").ok();
    let yearly = Schedule::parse("0 0 1 1 *").ok();
    let (Some(minutely), Some(yearly)) = (minutely, yearly) else {
        panic!("schedules did not parse");
    };
    let now = at("2026-12-02T10:05:30Z");
    let missed = |s: &Schedule, earliest: &str| s.latest_missed(at(earliest), now, &utc).map(|t| t.to_string());
    assert_eq!(
        missed(&minutely, "2020-01-01T00:00:00Z").as_deref(),
        Some("2026-12-02T10:05:00Z")
    );
    assert_eq!(missed(&minutely, "2026-12-02T10:05:00Z"), None);
    assert_eq!(
        missed(&minutely, "2026-12-02T10:04:59Z").as_deref(),
        Some("2026-12-02T10:05:00Z")
    );
    assert_eq!(
        missed(&yearly, "2020-06-01T00:00:00Z").as_deref(),
        Some("2026-01-01T00:00:00Z")
    );
    assert_eq!(missed(&yearly, "2026-06-01T00:00:00Z"), None);
    let every = Schedule::parse("@every 2h").ok();
    assert_eq!(
        every
            .and_then(|s| s.latest_missed(at("2026-12-02T03:00:00Z"), now, &utc))
            .map(|t| t.to_string())
            .as_deref(),
        Some("2026-12-02T09:00:00Z")
    );
}

#[test]
fn errors_say_where_and_what_is_accepted() {
    let error = |text: &str| Schedule::parse(text).err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(
        error("0 25 * * *"),
        "at column 3: hour field \"25\": 25 is above the maximum 23; accepted: 0-23, *, ranges a-b, steps */n or a-b/n, lists a,b"
    );
    assert!(
        error("0 2 * *").starts_with("at column 1: expected exactly 5 fields"),
        "{}",
        error("0 2 * *")
    );
    assert!(error("0 2 * * 7").starts_with("at column 9: day of week field \"7\": 7 is above the maximum 6"));
    assert!(
        error("0 2 * FOO *").contains("\"FOO\" is not a month"),
        "{}",
        error("0 2 * FOO *")
    );
    assert!(error("*/0 * * * *").contains("the step must be a positive number"));
    assert!(error("0 5-2 * * *").contains("the range starts at 5, beyond its end 2"));
    assert!(error("@fortnightly").starts_with("at column 1: unknown macro \"@fortnightly\""));
    assert!(error("TZ=Europe/Berlin 0 2 * *x *").starts_with("at column 24: month field \"*x\""));
    assert!(error("@every 0s").contains("shorter than one second"));
    assert!(error("").contains("the schedule is empty"));
    assert_eq!(
        Schedule::parse("CRON_TZ=Asia/Tokyo @daily")
            .ok()
            .and_then(|s| s.prefix_zone),
        Some("Asia/Tokyo".to_owned())
    );
}

#[test]
fn zones_are_iana_names() {
    assert!(load_zone("Europe/Berlin").is_ok());
    assert!(load_zone("UTC").is_ok());
    assert!(load_zone("Local").unwrap_err().contains("not Local"));
    assert!(
        load_zone("Mars/Olympus")
            .unwrap_err()
            .contains("unknown time zone \"Mars/Olympus\"")
    );
}
