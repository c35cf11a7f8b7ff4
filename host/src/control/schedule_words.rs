//! A schedule said in words, as Prefect's UI says it ("At 09:00 on
//! Monday"). Only the common five-field cron forms are put in words; for
//! anything else the expression itself is the clearest thing to show.

use crate::model::Schedule;

const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// The schedule in words, with its time zone when it is a cron.
pub fn describe(schedule: &Schedule) -> String {
    match (&schedule.cron, schedule.interval_seconds) {
        (Some(cron), _) => {
            let words = describe_cron(cron).unwrap_or_else(|| format!("Cron {cron}"));
            format!("{words} ({})", schedule.timezone)
        }
        (None, Some(seconds)) => describe_interval(seconds),
        (None, None) => "No schedule".into(),
    }
}

/// "Every 15 minutes", "Every 2 hours", "Every 90 seconds".
pub fn describe_interval(seconds: u64) -> String {
    let units = [
        (86_400, "day"),
        (3_600, "hour"),
        (60, "minute"),
        (1, "second"),
    ];
    let (size, unit) = units
        .into_iter()
        .find(|(size, _)| seconds.is_multiple_of(*size) && seconds >= *size)
        .unwrap_or((1, "second"));
    match seconds / size {
        1 => format!("Every {unit}"),
        n => format!("Every {n} {unit}s"),
    }
}

/// One field: `*`, `*/n`, or a list of numbers and `a-b` ranges.
#[derive(Debug, PartialEq)]
enum Field {
    Any,
    Step(u32),
    Values(Vec<(u32, u32)>),
}

fn field(text: &str, max: u32) -> Option<Field> {
    if text == "*" {
        return Some(Field::Any);
    }
    if let Some(step) = text.strip_prefix("*/") {
        return step
            .parse()
            .ok()
            .filter(|s| (1..=max).contains(s))
            .map(Field::Step);
    }
    let mut values = Vec::new();
    for item in text.split(',') {
        let (low, high) = match item.split_once('-') {
            Some((low, high)) => (low.parse().ok()?, high.parse().ok()?),
            None => {
                let n = item.parse().ok()?;
                (n, n)
            }
        };
        if low > high || high > max {
            return None;
        }
        values.push((low, high));
    }
    Some(Field::Values(values))
}

/// "a, b and c".
fn join(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

fn names(values: &[(u32, u32)], name: impl Fn(u32) -> Option<String>) -> Option<String> {
    let items = values
        .iter()
        .map(|&(low, high)| {
            if low == high {
                name(low)
            } else {
                Some(format!("{} through {}", name(low)?, name(high)?))
            }
        })
        .collect::<Option<Vec<_>>>()?;
    Some(join(&items))
}

/// The common five-field forms in words; `None` for what it cannot say.
pub fn describe_cron(cron: &str) -> Option<String> {
    let parts: Vec<&str> = cron.split_whitespace().collect();
    let [minute, hour, day, month, weekday] = parts[..] else {
        return None;
    };
    let (minute, hour) = (field(minute, 59)?, field(hour, 23)?);
    let (day, month) = (field(day, 31)?, field(month, 12)?);
    // 7 is Sunday too.
    let weekday = field(weekday, 7)?;
    let time = match (&minute, &hour) {
        (Field::Any, Field::Any) => "Every minute".to_string(),
        // `*/45` starts again each hour (:00, :45, :00): evenly spaced only
        // when the step divides the hour.
        (Field::Step(n), Field::Any) if 60 % n == 0 => format!("Every {n} minutes"),
        (Field::Values(m), Field::Any) if single(m).is_some() => {
            let m = single(m)?;
            if m == 0 {
                "Every hour".to_string()
            } else {
                format!("At {m} minutes past every hour")
            }
        }
        (Field::Values(m), Field::Step(n)) if single(m).is_some() && 24 % n == 0 => {
            format!("At minute {} past every {n} hours", single(m)?)
        }
        (Field::Values(m), Field::Values(h)) if single(m).is_some() => {
            let m = single(m)?;
            let hours = h
                .iter()
                .flat_map(|&(low, high)| low..=high)
                .map(|h| format!("{h:02}:{m:02}"))
                .collect::<Vec<_>>();
            if hours.len() > 6 {
                return None;
            }
            format!("At {}", join(&hours))
        }
        _ => return None,
    };
    // With both a day of the month and a weekday, cron runs on either: no
    // short sentence says that without misleading.
    if day != Field::Any && weekday != Field::Any {
        return None;
    }
    let mut words = time;
    match &day {
        Field::Any => {}
        Field::Values(days) => {
            words += &format!(
                " on day {} of the month",
                names(days, |d| Some(d.to_string()))?
            );
        }
        Field::Step(_) => return None,
    }
    match &month {
        Field::Any => {}
        Field::Values(months) => {
            let text = names(months, |m| {
                MONTHS.get(m as usize - 1).map(|s| s.to_string())
            })?;
            words += &format!(" in {text}");
        }
        Field::Step(_) => return None,
    }
    match &weekday {
        Field::Any => {}
        Field::Values(days) => {
            // A range ending at 7 (`0-7`, `5-7`) wraps past Sunday.
            if days.iter().any(|&(low, high)| high == 7 && low != high) {
                return None;
            }
            let text = names(days, |d| Some(DAYS[(d % 7) as usize].to_string()))?;
            words += &format!(" on {text}");
        }
        Field::Step(_) => return None,
    }
    Some(words)
}

/// The value of a one-number field.
fn single(values: &[(u32, u32)]) -> Option<u32> {
    match values {
        [(low, high)] if low == high => Some(*low),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_forms_are_said_in_words() {
        for (cron, words) in [
            ("* * * * *", "Every minute"),
            ("*/15 * * * *", "Every 15 minutes"),
            ("0 * * * *", "Every hour"),
            ("5 * * * *", "At 5 minutes past every hour"),
            ("30 */2 * * *", "At minute 30 past every 2 hours"),
            ("0 9 * * *", "At 09:00"),
            ("0 9 * * 1", "At 09:00 on Monday"),
            ("0 9 * * 7", "At 09:00 on Sunday"),
            ("30 17 * * 1-5", "At 17:30 on Monday through Friday"),
            ("0 9 * * 1,3,5", "At 09:00 on Monday, Wednesday and Friday"),
            ("0 9,17 * * *", "At 09:00 and 17:00"),
            ("0 0 1 * *", "At 00:00 on day 1 of the month"),
            ("0 6 1 1 *", "At 06:00 on day 1 of the month in January"),
            ("0 8 * 6-8 *", "At 08:00 in June through August"),
        ] {
            assert_eq!(describe_cron(cron).as_deref(), Some(words), "{cron}");
        }
    }

    #[test]
    fn what_it_cannot_say_is_none() {
        for cron in [
            "@daily",
            "0 9 * *",
            "*/5 9 * * *",
            "0 9 */2 * *",
            "0 0-23 * * *",
            "0 9 * * MON",
            "61 * * * *",
            "0 9 * * 8",
            // Not evenly spaced: :00 and :45 of every hour; 20:00 then 00:00.
            "*/45 * * * *",
            "0 */5 * * *",
            // Both a day and a weekday: cron runs on either.
            "0 9 13 * 5",
            "0 0 29 2 1",
            // Ranges wrapping past Sunday.
            "* * * * 0-7",
            "0 12 * * 5-7",
        ] {
            assert_eq!(describe_cron(cron), None, "{cron}");
        }
    }

    #[test]
    fn a_schedule_falls_back_to_its_expression() {
        let schedule = |cron: &str| Schedule {
            interval_seconds: None,
            cron: Some(cron.into()),
            timezone: "Europe/Paris".into(),
            anchor: None,
            active: true,
        };
        assert_eq!(
            describe(&schedule("0 9 * * 1")),
            "At 09:00 on Monday (Europe/Paris)"
        );
        assert_eq!(
            describe(&schedule("@hourly")),
            "Cron @hourly (Europe/Paris)"
        );
        assert_eq!(describe_interval(60), "Every minute");
        assert_eq!(describe_interval(900), "Every 15 minutes");
        assert_eq!(describe_interval(7200), "Every 2 hours");
        assert_eq!(describe_interval(90), "Every 90 seconds");
        assert_eq!(describe_interval(86_400), "Every day");
    }
}
