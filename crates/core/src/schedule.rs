//! The schedules `invariants.schedule_repair()` accepts before it hands
//! them to pg_cron.

/// True for the schedules pg_cron accepts: five cron fields, a macro such
/// as '@hourly', or 'N seconds' (1 to 59).
pub fn plausible_schedule(every: &str) -> bool {
    let every = every.trim();
    const MACROS: [&str; 8] = [
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
        "@reboot",
    ];
    if MACROS.contains(&every) {
        return true;
    }
    let words: Vec<&str> = every.split_whitespace().collect();
    if let [n, unit] = words.as_slice() {
        return matches!(*unit, "second" | "seconds") && n.parse::<u32>().is_ok_and(|n| (1..=59).contains(&n));
    }
    words.len() == 5
        && words.iter().all(|w| {
            w.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | ',' | '-' | '/'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted() {
        for every in [
            "* * * * *",
            "*/5 * * * *",
            "0 3 * * mon-fri",
            " @hourly ",
            "30 seconds",
            "1 second",
        ] {
            assert!(plausible_schedule(every), "{every}");
        }
    }

    #[test]
    fn refused() {
        for every in [
            "",
            "* * * *",
            "* * * * * *",
            "@often",
            "0 seconds",
            "60 seconds",
            "5 minutes",
            "* * * * ;drop",
            "1; * * * *",
        ] {
            assert!(!plausible_schedule(every), "{every}");
        }
    }
}
