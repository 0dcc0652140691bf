//! The score and status `invariants.health()` reports.

/// 100 minus the percentage of rows violating any rule, rounded so that a
/// single violating row already costs a point.
pub fn health_score(violating: i64, total: i64) -> i64 {
    if total <= 0 {
        return 100;
    }
    let violating = violating.clamp(0, total);
    // 100 - ceil(100 * violating / total), in integers that cannot overflow.
    let violating = i128::from(violating);
    let total = i128::from(total);
    (100 - (100 * violating + total - 1) / total) as i64
}

/// "healthy" with no violating row, "degraded" under 5% of rows,
/// "critical" from 5% on.
pub fn status(violating: i64, total: i64) -> &'static str {
    if violating <= 0 {
        "healthy"
    } else if i128::from(violating) * 100 < i128::from(total) * 5 {
        "degraded"
    } else {
        "critical"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores() {
        assert_eq!(health_score(0, 0), 100);
        assert_eq!(health_score(0, 10), 100);
        assert_eq!(health_score(1, 1_000_000), 99);
        assert_eq!(health_score(53, 100), 47);
        assert_eq!(health_score(53, 73), 27); // 100 - 72.6 = 27.4
        assert_eq!(health_score(10, 10), 0);
        assert_eq!(health_score(i64::MAX, i64::MAX), 0);
    }

    #[test]
    fn statuses() {
        assert_eq!(status(0, 100), "healthy");
        assert_eq!(status(4, 100), "degraded");
        assert_eq!(status(5, 100), "critical");
        assert_eq!(status(i64::MAX, i64::MAX), "critical");
    }
}
