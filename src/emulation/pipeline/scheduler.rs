//! The release scheduler: frames waiting for their release time.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use super::stage::Frame;

/// A frame leaving the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// The release time the pipeline computed, ns (at most the `now` it was
    /// popped at).
    pub at_ns: u64,
    pub frame: Frame,
}

struct Entry<T> {
    at_ns: u64,
    /// Insertion order: FIFO among equal release times.
    order: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<T> Eq for Entry<T> {}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Entry<T> {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at_ns, other.order).cmp(&(self.at_ns, self.order))
    }
}

/// Items ordered by `(time, insertion order)`: a min-heap with netem's tfifo
/// shortcut. Items arriving in time order (constant delay, a busy rate
/// limiter) go to a linear queue in O(1), like netem's `t_head`/`t_tail`;
/// only out-of-order ones (jitter) pay for the heap. Popping takes the
/// earlier of the two fronts.
pub(crate) struct TimeQueue<T> {
    linear: VecDeque<Entry<T>>,
    heap: BinaryHeap<Entry<T>>,
    order: u64,
}

impl<T> Default for TimeQueue<T> {
    fn default() -> Self {
        TimeQueue {
            linear: VecDeque::new(),
            heap: BinaryHeap::new(),
            order: 0,
        }
    }
}

impl<T> TimeQueue<T> {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        TimeQueue {
            linear: VecDeque::with_capacity(capacity),
            heap: BinaryHeap::new(),
            order: 0,
        }
    }

    pub(crate) fn push(&mut self, at_ns: u64, item: T) {
        let entry = Entry {
            at_ns,
            order: self.order,
            item,
        };
        self.order += 1;
        match self.linear.back() {
            Some(last) if at_ns < last.at_ns => self.heap.push(entry),
            _ => self.linear.push_back(entry),
        }
    }

    /// Whether the linear queue's front comes before the heap's.
    fn linear_first(&self) -> Option<bool> {
        match (self.linear.front(), self.heap.peek()) {
            (None, None) => None,
            (Some(_), None) => Some(true),
            (None, Some(_)) => Some(false),
            // Entry's order is reversed: greater means earlier.
            (Some(l), Some(h)) => Some(l > h),
        }
    }

    pub(crate) fn peek_at(&self) -> Option<u64> {
        match self.linear_first()? {
            true => self.linear.front().map(|e| e.at_ns),
            false => self.heap.peek().map(|e| e.at_ns),
        }
    }

    pub(crate) fn pop(&mut self) -> Option<(u64, T)> {
        let entry = match self.linear_first()? {
            true => self.linear.pop_front()?,
            false => self.heap.pop()?,
        };
        Some((entry.at_ns, entry.item))
    }

    pub(crate) fn len(&self) -> usize {
        self.linear.len() + self.heap.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.linear.is_empty() && self.heap.is_empty()
    }
}

/// Frames ordered by release time, like netem's tfifo plus its head queue.
///
/// A [`TimeQueue`] (binary heap plus netem's linear-queue shortcut) and a
/// "first" lane.
///
/// Invariants:
/// - frames come out in `(release time, insertion order)` order: equal times
///   are FIFO, as in netem's `tfifo_enqueue` (`>=` goes right). (netem, on a
///   tie between its linear queue and its rbtree, takes the linear queue
///   even if the rbtree frame came first; here insertion order always wins);
/// - frames inserted with [`push_first`](Self::push_first) come out before
///   everything else, the latest first, as netem's `__qdisc_enqueue_head` and
///   `netem_dequeue` (which drains `sch->q` before the tfifo) do;
/// - no frame of the time-ordered queue comes out before its release time
///   (a "first" frame carries the time it was pushed, which is now).
#[derive(Default)]
pub struct ReleaseScheduler {
    queue: TimeQueue<Frame>,
    first: VecDeque<(u64, Frame)>,
    released: u64,
}

impl std::fmt::Debug for ReleaseScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReleaseScheduler")
            .field("len", &self.len())
            .field("next_release", &self.next_release())
            .field("released", &self.released)
            .finish()
    }
}

impl ReleaseScheduler {
    pub fn new() -> ReleaseScheduler {
        ReleaseScheduler::default()
    }

    /// Holds `frame` until `at_ns`.
    pub fn push(&mut self, at_ns: u64, frame: Frame) {
        self.queue.push(at_ns, frame);
    }

    /// Releases `frame` ahead of everything held (reordering). `now_ns` is
    /// reported as its release time.
    pub fn push_first(&mut self, now_ns: u64, frame: Frame) {
        self.first.push_front((now_ns, frame));
    }

    /// When the next frame is due: the I/O loop can sleep until then. `None`
    /// when nothing is held.
    pub fn next_release(&self) -> Option<u64> {
        let first = self.first.iter().map(|(at, _)| *at).min();
        let heap = self.queue.peek_at();
        match (first, heap) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next frame due at `now_ns`, if any.
    pub fn pop_one(&mut self, now_ns: u64) -> Option<Released> {
        let (at_ns, frame) = match self.first.pop_front() {
            Some(first) => first,
            None => {
                if self.queue.peek_at()? > now_ns {
                    return None;
                }
                self.queue.pop()?
            }
        };
        self.released += 1;
        Some(Released { at_ns, frame })
    }

    /// Every frame due at `now_ns`, in release order. Frames not taken (the
    /// iterator dropped early) stay held.
    pub fn pop_due(&mut self, now_ns: u64) -> PopDue<'_> {
        PopDue {
            scheduler: self,
            now_ns,
        }
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.queue.len() + self.first.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Frames released so far.
    pub fn released(&self) -> u64 {
        self.released
    }
}

/// Iterator over the frames due at one instant; see
/// [`ReleaseScheduler::pop_due`].
pub struct PopDue<'a> {
    scheduler: &'a mut ReleaseScheduler,
    now_ns: u64,
}

impl Iterator for PopDue<'_> {
    type Item = Released;

    fn next(&mut self) -> Option<Released> {
        self.scheduler.pop_one(self.now_ns)
    }
}
