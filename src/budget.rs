//! The body budget: how many bytes of request bodies the host may hold in memory at
//! once, across every request. A body reserves its size (its `Content-Length`, or step
//! by step as a chunked body grows) before it is buffered, and keeps it until its
//! invocation has answered. A body that does not fit is refused at once (503 with
//! `Retry-After`), so many huge uploads cannot exhaust the sidecar's memory.
//! Pure bookkeeping: no I/O, no knowledge of HTTP.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// Reservations are counted in KiB so budgets beyond 4 GiB fit the semaphore's `u32`
/// acquire counts.
const UNIT: u64 = 1024;

/// The shared budget.
#[derive(Clone)]
pub struct BodyBudget {
    permits: Arc<Semaphore>,
    bytes: u64,
}

/// Refused: the body does not fit what is left of the budget.
#[derive(Debug, thiserror::Error)]
#[error("request bodies in memory are at the {budget}-byte body budget")]
pub struct OverBudget {
    pub budget: u64,
}

/// Bytes reserved by one body; dropping it gives them back.
#[derive(Debug, Default)]
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
    bytes: u64,
}

impl BodyBudget {
    pub fn new(bytes: u64) -> BodyBudget {
        let units = usize::try_from(bytes / UNIT)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        BodyBudget {
            permits: Arc::new(Semaphore::new(units)),
            bytes,
        }
    }

    /// Reserves `bytes` now, or refuses.
    pub fn reserve(&self, bytes: u64) -> Result<Reservation, OverBudget> {
        let mut reservation = Reservation::default();
        self.grow(&mut reservation, bytes)?;
        Ok(reservation)
    }

    /// Grows `reservation` to cover at least `bytes` in total, or refuses (leaving it as it was).
    pub fn grow(&self, reservation: &mut Reservation, bytes: u64) -> Result<(), OverBudget> {
        if bytes <= reservation.bytes {
            return Ok(());
        }
        let have = units(reservation.bytes);
        let want = units(bytes);
        let more = u32::try_from(want - have).map_err(|_| self.over())?;
        if more > 0 {
            let permit = match self.permits.clone().try_acquire_many_owned(more) {
                Ok(permit) => permit,
                Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => {
                    return Err(self.over());
                }
            };
            match &mut reservation.permit {
                Some(held) => held.merge(permit),
                None => reservation.permit = Some(permit),
            }
        }
        reservation.bytes = bytes;
        Ok(())
    }

    /// Bytes not reserved right now.
    #[cfg(test)]
    fn available(&self) -> u64 {
        self.permits.available_permits() as u64 * UNIT
    }

    fn over(&self) -> OverBudget {
        OverBudget { budget: self.bytes }
    }
}

impl Reservation {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

fn units(bytes: u64) -> u64 {
    bytes.div_ceil(UNIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn reservations_beyond_the_budget_are_refused_and_returned_on_drop() {
        let budget = BodyBudget::new(10 * MIB);
        let a = budget.reserve(6 * MIB).expect("fits");
        assert!(budget.reserve(5 * MIB).is_err(), "6 + 5 > 10");
        let b = budget.reserve(4 * MIB).expect("6 + 4 fits exactly");
        assert_eq!(budget.available(), 0);
        drop(a);
        assert_eq!(budget.available(), 6 * MIB);
        drop(b);
        assert_eq!(budget.available(), 10 * MIB);
    }

    #[test]
    fn a_growing_body_reserves_step_by_step_and_a_refusal_keeps_what_it_had() {
        let budget = BodyBudget::new(4 * MIB);
        let mut r = budget.reserve(1).expect("one byte");
        assert_eq!(budget.available(), 4 * MIB - UNIT, "rounded up to a unit");
        budget.grow(&mut r, 3 * MIB).expect("grows");
        budget.grow(&mut r, 2 * MIB).expect("never shrinks");
        assert_eq!(r.bytes(), 3 * MIB);
        assert!(budget.grow(&mut r, 5 * MIB).is_err());
        assert_eq!(r.bytes(), 3 * MIB);
        assert_eq!(budget.available(), MIB);
        drop(r);
        assert_eq!(budget.available(), 4 * MIB);
    }

    #[test]
    fn an_empty_body_costs_nothing() {
        let budget = BodyBudget::new(0);
        let r = budget.reserve(0).expect("nothing to reserve");
        assert_eq!(r.bytes(), 0);
    }
}
