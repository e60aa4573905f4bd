//! How a settled servicekey's value is divided (services.md §3.3, "Settlement"): the contract
//! keeps `fee_percent` of the value, the rest goes to the relays in proportion to the
//! sharetokens each had accepted for that servicekey. Exact rational arithmetic, no rounding:
//! the shares and the retained part always add up to the value.
//!
//! Pure arithmetic only; when and how often a servicekey is settled is the store's business.

use num_bigint::BigInt;
use num_rational::BigRational;
use wireleap_proto::rational::Rational;

/// The result of dividing one servicekey's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split<K> {
    /// Each relay's credit, in the order the counts were given; relays with zero tokens are
    /// left out.
    pub shares: Vec<(K, Rational)>,
    /// What the contract keeps: its fee, or the whole value when no token was submitted.
    pub retained: Rational,
}

/// Divides `value` among `counts` (relay, accepted tokens) after the contract's
/// `fee_percent` (0–100; values outside are clamped).
pub fn split<K: Clone>(value: &Rational, fee_percent: &Rational, counts: &[(K, i64)]) -> Split<K> {
    let hundred = BigRational::from_integer(BigInt::from(100));
    let zero = BigRational::from_integer(BigInt::from(0));
    let fee = fee_percent.0.clone().max(zero.clone()).min(hundred.clone());
    let total: i64 = counts.iter().map(|(_, n)| (*n).max(0)).sum();
    if total == 0 {
        return Split {
            shares: Vec::new(),
            retained: value.clone(),
        };
    }
    let pool = &value.0 * (&hundred - &fee) / &hundred;
    let total = BigRational::from_integer(BigInt::from(total));
    let mut given = zero;
    let shares: Vec<(K, Rational)> = counts
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| {
            let share = &pool * BigRational::from_integer(BigInt::from(*n)) / &total;
            given += &share;
            (k.clone(), Rational(share))
        })
        .collect();
    Split {
        shares,
        retained: Rational(&value.0 - given),
    }
}

/// Adds up rational amounts.
pub fn sum<'a>(amounts: impl IntoIterator<Item = &'a Rational>) -> Rational {
    Rational(
        amounts
            .into_iter()
            .fold(BigRational::from_integer(BigInt::from(0)), |acc, a| {
                acc + &a.0
            }),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(s: &str) -> Rational {
        s.parse().unwrap()
    }

    #[test]
    fn known_split() {
        let s = split(&r("1000"), &r("5"), &[("a", 1), ("b", 2), ("c", 0)]);
        assert_eq!(s.shares, vec![("a", r("950/3")), ("b", r("1900/3"))]);
        assert_eq!(s.retained, r("50"));
    }

    #[test]
    fn nobody_submitted() {
        let s = split::<&str>(&r("1000"), &r("5"), &[]);
        assert!(s.shares.is_empty());
        assert_eq!(s.retained, r("1000"));
    }

    proptest! {
        #[test]
        fn shares_add_up_and_are_proportional(
            value in 0i64..1_000_000,
            fee_num in 0i64..=1000,
            counts in proptest::collection::vec(0i64..1000, 0..12),
        ) {
            let value = Rational::from_integer(value);
            let fee = Rational::new(fee_num, 10).unwrap();
            let keyed: Vec<(usize, i64)> = counts.iter().copied().enumerate().collect();
            let s = split(&value, &fee, &keyed);
            let total = sum(s.shares.iter().map(|(_, a)| a).chain([&s.retained]));
            prop_assert_eq!(total, value.clone());
            let tokens: i64 = counts.iter().sum();
            let pool = &value.0 * (BigRational::from_integer(100.into()) - &fee.0)
                / BigRational::from_integer(100.into());
            let zero = BigRational::from_integer(0.into());
            for (k, a) in &s.shares {
                // Positive unless there is nothing to share (value 0 or a 100 % fee).
                prop_assert!(a.0 > zero || pool == zero);
                // share / value_after_fee == count / total
                let pool = pool.clone();
                prop_assert_eq!(&a.0 * BigRational::from_integer(tokens.into()),
                    pool * BigRational::from_integer(counts[*k].into()));
            }
            if tokens > 0 {
                prop_assert_eq!(s.retained.0, &value.0 * &fee.0 / BigRational::from_integer(100.into()));
            }
        }
    }
}
