use super::*;

const LIMITS: HourlyLimits = HourlyLimits { messages: 3, recipients: 5 };

fn minutes(count: u64) -> Duration {
    Duration::from_secs(60 * count)
}

#[test]
fn allows_the_limit_then_refuses_and_reports_once() {
    let mut window = SlidingWindow::default();
    for _ in 0..4 {
        assert_eq!(window.take(minutes(1), 4), Admission::Allowed);
    }
    assert_eq!(window.take(minutes(2), 4), Admission::Limited { limit: 4, first: true });
    assert_eq!(window.take(minutes(3), 4), Admission::Limited { limit: 4, first: false });
    assert_eq!(window.take(minutes(59), 4), Admission::Limited { limit: 4, first: false });
}

#[test]
fn zero_means_unlimited() {
    let mut window = SlidingWindow::default();
    for second in 0..10_000 {
        assert_eq!(window.take(Duration::from_secs(second), 0), Admission::Allowed);
    }
}

#[test]
fn the_previous_hour_fades_out_linearly() {
    let mut window = SlidingWindow::default();
    for _ in 0..100 {
        assert_eq!(window.take(minutes(59), 100), Admission::Allowed);
    }
    // A quarter into the next window, three quarters of the previous 100 still count.
    let mut allowed = 0;
    while window.take(minutes(75), 100) == Admission::Allowed {
        allowed += 1;
    }
    assert_eq!(allowed, 25);
    // The refusal is reported again in the new window.
    let mut fresh = SlidingWindow::default();
    for _ in 0..100 {
        fresh.take(minutes(10), 100);
    }
    assert!(matches!(fresh.take(minutes(10), 100), Admission::Limited { first: true, .. }));
    let refusal = loop {
        match fresh.take(minutes(70), 100) {
            Admission::Allowed => continue,
            refusal => break refusal,
        }
    };
    assert_eq!(refusal, Admission::Limited { limit: 100, first: true });
    // Two hours of silence forget everything.
    assert_eq!(fresh.take(minutes(190), 100), Admission::Allowed);
}

/// Generated traffic on a virtual clock: no rolling hour admits more than twice the limit
/// (the weighted estimate's worst case is the limit plus rounding), no fixed window more than
/// the limit, and a sender below the rate is never refused.
#[test]
fn generated_traffic_stays_within_the_limit() {
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..200 {
        let limit = 1 + (next() % 300) as u32;
        let mut window = SlidingWindow::default();
        let mut now = Duration::ZERO;
        let mut allowed: Vec<Duration> = Vec::new();
        for _ in 0..2_000 {
            now += Duration::from_millis(next() % 20_000);
            if window.take(now, limit) == Admission::Allowed {
                allowed.push(now);
            }
        }
        let mut per_fixed_window: HashMap<u128, usize> = HashMap::new();
        for (index, start) in allowed.iter().enumerate() {
            let in_hour = allowed[index..].iter().take_while(|at| **at < *start + WINDOW).count();
            assert!(in_hour <= 2 * limit as usize, "limit {limit}: {in_hour} in one hour");
            *per_fixed_window.entry(start.as_millis() / WINDOW.as_millis()).or_default() += 1;
        }
        for (fixed, count) in per_fixed_window {
            assert!(count <= limit as usize, "limit {limit}: {count} in fixed window {fixed}");
        }
    }
    // Steady traffic at half the rate is never refused.
    let mut window = SlidingWindow::default();
    for step in 0..10_000u64 {
        assert_eq!(window.take(Duration::from_secs(step * 72), 100), Admission::Allowed, "step {step}");
    }
}

#[test]
fn users_and_clients_are_counted_separately() {
    let mut limiter = RateLimiter::default();
    let now = minutes(5);
    for _ in 0..3 {
        assert_eq!(limiter.take(Subject::User("a@x.gov.vn"), Kind::Messages, LIMITS, now), Admission::Allowed);
    }
    assert!(matches!(
        limiter.take(Subject::User("a@x.gov.vn"), Kind::Messages, LIMITS, now),
        Admission::Limited { .. }
    ));
    // Another user, the same user's recipients, and a client are untouched.
    assert_eq!(limiter.take(Subject::User("b@x.gov.vn"), Kind::Messages, LIMITS, now), Admission::Allowed);
    assert_eq!(limiter.take(Subject::User("a@x.gov.vn"), Kind::Recipients, LIMITS, now), Admission::Allowed);
    let client: IpAddr = "203.0.113.9".parse().unwrap();
    assert_eq!(limiter.take(Subject::Client(client), Kind::Messages, LIMITS, now), Admission::Allowed);
    for _ in 0..100 {
        assert_eq!(limiter.take(Subject::Exempt, Kind::Messages, LIMITS, now), Admission::Allowed);
    }
}

#[test]
fn one_ipv6_slash_64_is_one_client() {
    let mut limiter = RateLimiter::default();
    for host in 0..3u32 {
        let address: IpAddr = format!("2001:db8:1:2::{host:x}").parse().unwrap();
        assert_eq!(limiter.take(Subject::Client(address), Kind::Messages, LIMITS, minutes(1)), Admission::Allowed);
    }
    let other_host: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
    assert!(matches!(
        limiter.take(Subject::Client(other_host), Kind::Messages, LIMITS, minutes(1)),
        Admission::Limited { .. }
    ));
}

#[test]
fn sprayed_addresses_stay_within_the_cap_and_users_keep_their_count() {
    let mut limiter = RateLimiter::with_capacity(10, 100);
    for _ in 0..3 {
        limiter.take(Subject::User("a@x.gov.vn"), Kind::Messages, LIMITS, minutes(1));
    }
    for index in 0..10_000u32 {
        let address = IpAddr::from(index.to_be_bytes());
        limiter.take(Subject::Client(address), Kind::Messages, LIMITS, minutes(1));
        assert!(limiter.clients_tracked() <= 100);
    }
    assert_eq!(limiter.clients.order.len(), limiter.clients.entries.len());
    assert!(matches!(
        limiter.take(Subject::User("a@x.gov.vn"), Kind::Messages, LIMITS, minutes(1)),
        Admission::Limited { .. }
    ));
}
