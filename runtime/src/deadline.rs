//! A call's time limit counted in the CPU time of the thread that runs it, with a wall-clock
//! bound behind it.
//!
//! Why CPU time: tenants' plugins run on threads of lower priority (`serve::tenant_threads`)
//! so that the host's work for everyone else comes first. Such a thread waits whenever that
//! work wants the CPU; a wall-clock limit would then charge a legitimate plugin for time it
//! spent waiting, and time it out because other tenants were busy. The CPU time of its own
//! thread is what the plugin itself spent, whatever the load.
//!
//! How it is checked: the epoch ticker (every millisecond) reaches the store's deadline no
//! earlier than the limit in wall time (CPU time never runs ahead of wall time on one
//! thread); wasmtime then calls [`CallClock::at_deadline`], which reads the thread's CPU
//! clock and either stops the call (the limit is spent) or sets the next deadline at the
//! earliest moment the rest of the limit could be spent. A call that keeps its CPU time
//! under the limit costs one clock read at its start and none at all if it ends within
//! the limit in wall time.
//!
//! The bound on waiting: a call that has not spent its CPU limit is still stopped after
//! [`WALL_BOUND_FACTOR`] × the limit in wall time, so a starved call holds its tenant's call
//! slot and a thread for a bounded time. That stop is the host's doing, not the plugin's:
//! it is reported as [`super::PluginError::Unavailable`], which does not count towards the
//! plugin's suspension, and the message is deferred or handed to the fallback as for any
//! failed call. With the threads at nice 10, a thread gets about a tenth of a core against
//! one busy thread of normal priority per core (CFS weights 110 and 1024), so the factor of
//! 20 is reached only when the call got under half of that share for the whole of its length.

use std::time::{Duration, Instant};

/// A call is stopped after this many times its limit in wall time, whatever CPU time it
/// has spent.
pub const WALL_BOUND_FACTOR: u32 = 20;

/// The CPU time the calling thread has used so far.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID exists on every
    // Linux this runs on. On failure `ts` stays zero and the wall bound still holds.
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// What to do when a call's epoch deadline is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtDeadline {
    /// Go on for this many more ticks.
    Continue(u64),
    /// The call has used its CPU time: a timeout.
    CpuSpent,
    /// The call waited past the wall bound without spending its CPU time.
    Starved,
}

/// One call's clocks: started on the thread that runs the call.
#[derive(Debug, Clone, Copy)]
pub struct CallClock {
    cpu_start: Duration,
    wall_start: Instant,
    limit: Duration,
    tick: Duration,
}

impl CallClock {
    pub fn start(limit: Duration, tick: Duration) -> CallClock {
        CallClock {
            cpu_start: thread_cpu_time(),
            wall_start: Instant::now(),
            limit,
            tick,
        }
    }

    /// The first deadline, in ticks: the limit, as if the call had the CPU to itself.
    pub fn first_deadline(&self) -> u64 {
        ticks(self.limit, self.tick)
    }

    /// The wall time after which a call is stopped whatever it spent.
    pub fn wall_bound(&self) -> Duration {
        self.limit * WALL_BOUND_FACTOR
    }

    /// CPU time the call has used on this thread.
    pub fn cpu_used(&self) -> Duration {
        thread_cpu_time().saturating_sub(self.cpu_start)
    }

    pub fn wall_used(&self) -> Duration {
        self.wall_start.elapsed()
    }

    /// Called on the call's own thread when its deadline is reached.
    pub fn at_deadline(&self) -> AtDeadline {
        decide(
            self.cpu_used(),
            self.wall_used(),
            self.limit,
            self.wall_bound(),
            self.tick,
        )
    }
}

/// The decision, apart from the clocks (tested on its own).
fn decide(
    cpu: Duration,
    wall: Duration,
    limit: Duration,
    wall_bound: Duration,
    tick: Duration,
) -> AtDeadline {
    if cpu >= limit {
        AtDeadline::CpuSpent
    } else if wall >= wall_bound {
        AtDeadline::Starved
    } else {
        // The rest of the limit cannot be spent sooner than this in wall time.
        let next = (limit - cpu).min(wall_bound - wall);
        AtDeadline::Continue(ticks(next, tick))
    }
}

/// Epoch checks fire at tick boundaries, so a deadline of N ticks can end up to one tick
/// early: add one.
pub fn ticks(d: Duration, tick: Duration) -> u64 {
    (d.as_micros() / tick.as_micros().max(1)) as u64 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_call_that_spent_its_cpu_time_stops() {
        assert_eq!(
            decide(100 * MS, 100 * MS, 100 * MS, 2000 * MS, MS),
            AtDeadline::CpuSpent
        );
    }

    #[test]
    fn a_call_that_waited_goes_on_for_the_rest_of_its_cpu_time() {
        // 30 ms of CPU in 100 ms of wall time: 70 ms more at the earliest.
        assert_eq!(
            decide(30 * MS, 100 * MS, 100 * MS, 2000 * MS, MS),
            AtDeadline::Continue(71)
        );
        // Near the wall bound, the bound comes first.
        assert_eq!(
            decide(30 * MS, 1980 * MS, 100 * MS, 2000 * MS, MS),
            AtDeadline::Continue(21)
        );
    }

    #[test]
    fn a_call_starved_past_the_wall_bound_stops_as_starved() {
        assert_eq!(
            decide(30 * MS, 2000 * MS, 100 * MS, 2000 * MS, MS),
            AtDeadline::Starved
        );
    }

    #[test]
    fn the_thread_cpu_clock_counts_work_not_sleep() {
        let start = thread_cpu_time();
        std::thread::sleep(20 * MS);
        let slept = thread_cpu_time() - start;
        assert!(slept < 10 * MS, "{slept:?} of CPU while sleeping");
        let start = thread_cpu_time();
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < 30 * MS {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(thread_cpu_time() - start > Duration::ZERO);
    }
}
