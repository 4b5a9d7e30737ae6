//! Reconnect delays: exponential backoff with jitter, as a pure struct that takes its randomness as input.

use std::time::Duration;

/// Exponential backoff with a cap, a random factor and a reset after a long-lived connection.
///
/// Pure: the caller passes the random factor and the duration of the last connection,
/// so every sequence of delays can be checked in a unit test without a clock.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    multiplier: u32,
    cap: Duration,
    reset_after: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `base`, multiplied by `multiplier` per failure, never above `cap`;
    /// a connection that lasted longer than `reset_after` starts the sequence over.
    pub fn new(base: Duration, multiplier: u32, cap: Duration, reset_after: Duration) -> Self {
        Self {
            base,
            multiplier: multiplier.max(1),
            cap,
            reset_after,
            attempt: 0,
        }
    }

    /// The broker link's policy: 250 ms, x2, capped at 3 s, reset after 10 s of connection.
    pub fn for_broker_link() -> Self {
        Self::new(
            Duration::from_millis(250),
            2,
            Duration::from_secs(3),
            Duration::from_secs(10),
        )
    }

    /// The adb tracker's policy: 250 ms, x2, capped at 5 s, reset after 10 s of tracking.
    pub fn for_adb_server() -> Self {
        Self::new(
            Duration::from_millis(250),
            2,
            Duration::from_secs(5),
            Duration::from_secs(10),
        )
    }

    /// A node-started slot server's restarts (Appium): 1 s, x2, capped at 30 s, reset after a
    /// minute of running.
    pub fn for_slot_server() -> Self {
        Self::new(
            Duration::from_secs(1),
            2,
            Duration::from_secs(30),
            Duration::from_secs(60),
        )
    }

    /// The longest delay this backoff ever returns (before jitter).
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// Records that a connection lasted `lasted`; a long one resets the sequence.
    pub fn connection_ended(&mut self, lasted: Duration) {
        if lasted > self.reset_after {
            self.attempt = 0;
        }
    }

    /// Starts the sequence over.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next delay: `min(cap, base * multiplier^attempt) * random_factor`.
    ///
    /// `random_factor` is clamped into [0.5, 1.0] (NaN counts as 1.0), so a bad random
    /// source can neither make the node spin nor wait past the cap.
    pub fn next_delay(&mut self, random_factor: f64) -> Duration {
        let exponential = self
            .multiplier
            .checked_pow(self.attempt)
            .and_then(|factor| self.base.checked_mul(factor))
            .unwrap_or(self.cap);
        let undithered = exponential.min(self.cap);
        if undithered < self.cap {
            self.attempt = self.attempt.saturating_add(1);
        }
        let factor = if random_factor.is_nan() {
            1.0
        } else {
            random_factor.clamp(0.5, 1.0)
        };
        undithered.mul_f64(factor)
    }

    /// The delay to use after a refusal that retrying soon will not fix (bad token,
    /// duplicate node id): the cap, with jitter.
    pub fn capped_delay(&self, random_factor: f64) -> Duration {
        let factor = if random_factor.is_nan() {
            1.0
        } else {
            random_factor.clamp(0.5, 1.0)
        };
        self.cap.mul_f64(factor)
    }
}

/// A random factor in [0.5, 1.0] for [`Backoff::next_delay`].
pub fn random_jitter() -> f64 {
    0.5 + rand::random::<f64>() * 0.5
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn doubles_from_base_up_to_the_cap() {
        let mut backoff = Backoff::for_broker_link();
        let delays: Vec<_> = (0..8).map(|_| backoff.next_delay(1.0)).collect();
        assert_eq!(
            delays,
            [
                ms(250),
                ms(500),
                ms(1000),
                ms(2000),
                ms(3000),
                ms(3000),
                ms(3000),
                ms(3000)
            ]
        );
    }

    #[test]
    fn jitter_scales_the_delay_and_is_clamped() {
        let mut backoff = Backoff::for_broker_link();
        assert_eq!(backoff.next_delay(0.5), ms(125));
        assert_eq!(backoff.next_delay(0.75), ms(375));
        // Out of range and NaN factors are clamped, never zero and never past the cap.
        assert_eq!(backoff.next_delay(0.0), ms(500));
        assert_eq!(backoff.next_delay(7.0), ms(2000));
        assert_eq!(backoff.next_delay(f64::NAN), ms(3000));
        assert_eq!(backoff.next_delay(-1.0), ms(1500));
    }

    #[test]
    fn a_long_connection_resets_and_a_short_one_does_not() {
        let mut backoff = Backoff::for_broker_link();
        for _ in 0..4 {
            backoff.next_delay(1.0);
        }
        backoff.connection_ended(Duration::from_secs(2));
        assert_eq!(backoff.next_delay(1.0), ms(3000));
        backoff.connection_ended(Duration::from_secs(11));
        assert_eq!(backoff.next_delay(1.0), ms(250));
    }

    #[test]
    fn never_overflows_after_many_failures() {
        let mut backoff = Backoff::new(Duration::from_secs(1), 10, Duration::from_secs(30), ms(1));
        for _ in 0..10_000 {
            assert!(backoff.next_delay(1.0) <= Duration::from_secs(30));
        }
    }

    #[test]
    fn capped_delay_is_the_cap_with_jitter() {
        let backoff = Backoff::for_broker_link();
        assert_eq!(backoff.capped_delay(1.0), ms(3000));
        assert_eq!(backoff.capped_delay(0.5), ms(1500));
    }

    #[test]
    fn random_jitter_stays_in_range() {
        for _ in 0..1000 {
            let r = random_jitter();
            assert!((0.5..=1.0).contains(&r), "{r}");
        }
    }
}
