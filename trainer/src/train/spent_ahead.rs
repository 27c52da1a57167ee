//! Worker 0's accountant one epoch ahead: the budget spent after an epoch, computed on a
//! thread of its own while the epoch trains.
//!
//! What a run has spent after an epoch depends only on its step count and the releases made by
//! then (`Accounting::spent_so_far`), both known before the epoch starts; the model plays no
//! part. The DP step runs on one thread, and the PLD accountant's first call takes about as
//! long as a census epoch (most of it planning its FFTs and faulting in its buffers, which are
//! kept per thread), so the answer is computed beside the epoch, by one thread for the whole
//! run (its plans and buffers stay warm), and the evaluation only collects it. It is the same
//! function of the same arguments, so the same bits: only where it runs changes.

use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

use accountant::PrivacySpent;

use crate::Result;
use crate::mechanism::privacy::Accounting;

/// A question: steps, and held-out releases made.
type Ask = (u64, u32);

/// The accountant's thread, and the question it was last asked.
pub(super) struct SpentAhead {
    accounting: Accounting,
    asks: Option<Sender<Ask>>,
    answers: Receiver<(Ask, Result<PrivacySpent>)>,
    asked: Option<Ask>,
    thread: Option<JoinHandle<()>>,
}

impl SpentAhead {
    /// The accountant's thread for `accounting`; where no thread can be started, every answer
    /// is computed when it is collected, as it would be without one.
    pub fn new(accounting: Accounting) -> Self {
        let (asks, questions) = mpsc::channel::<Ask>();
        let (replies, answers) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("accountant".into())
            .spawn(move || {
                for ask in questions {
                    let spent = accounting.spent_so_far(ask.0, ask.1);
                    if replies.send((ask, spent)).is_err() {
                        return;
                    }
                }
            })
            .ok();
        SpentAhead {
            accounting,
            asks: thread.is_some().then_some(asks),
            answers,
            asked: None,
            thread,
        }
    }

    /// Starts computing what is spent after `steps` steps and `test_releases` held-out
    /// releases.
    pub fn ask(&mut self, steps: u64, test_releases: u32) {
        let ask = (steps, test_releases);
        if let Some(asks) = &self.asks
            && asks.send(ask).is_ok()
        {
            self.asked = Some(ask);
        }
    }

    /// What is spent after `steps` steps and `test_releases` held-out releases: the answer
    /// asked for, or, for another question or with no thread to answer, computed here.
    pub fn spent(&mut self, steps: u64, test_releases: u32) -> Result<PrivacySpent> {
        let ask = (steps, test_releases);
        if self.asked.take().is_some() {
            // Every question gets one answer, in order: the one asked is the next.
            if let Ok((answered, spent)) = self.answers.recv()
                && answered == ask
            {
                return spent;
            }
        }
        self.accounting.spent_so_far(steps, test_releases)
    }
}

impl Drop for SpentAhead {
    fn drop(&mut self) {
        // Closing the questions ends the thread's loop (after the question in hand, if any).
        self.asks.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mechanism::privacy::Accounting;

    /// Steps at q = 0.01, sigma 1.1, a standardization release, two quantiles and a held-out
    /// release declared.
    fn accounting() -> Accounting {
        Accounting {
            accountant: accountant::AccountantKind::Pld,
            sampling_rate: 0.01,
            noise_multiplier: 1.1,
            sensitivity: 1.0,
            effective_noise_multiplier: 1.1,
            delta: 1e-5,
            preprocessing_noise_multiplier: Some(5.0),
            test_release_noise_multiplier: Some(20.0),
            test_releases: 1,
            quantile_epsilon: Some(0.05),
            quantiles: 2,
        }
    }

    /// The answer asked ahead is the answer computed in place, bit for bit; a question other
    /// than the one asked, or none asked, is answered in place; each answer is collected once.
    #[test]
    fn answers_asked_ahead_are_the_answers_computed_in_place() {
        let acc = accounting();
        let mut ahead = SpentAhead::new(acc);
        for (steps, releases) in [(100, 0), (200, 0), (300, 1)] {
            ahead.ask(steps, releases);
            let got = ahead.spent(steps, releases).unwrap();
            assert_eq!(got, acc.spent_so_far(steps, releases).unwrap());
        }
        ahead.ask(400, 1);
        let other = ahead.spent(500, 1).unwrap();
        assert_eq!(other, acc.spent_so_far(500, 1).unwrap());
        // The stale answer for 400 was taken and dropped: the next question is answered right.
        ahead.ask(600, 1);
        assert_eq!(
            ahead.spent(600, 1).unwrap(),
            acc.spent_so_far(600, 1).unwrap()
        );
        assert_eq!(
            ahead.spent(700, 0).unwrap(),
            acc.spent_so_far(700, 0).unwrap()
        );
    }
}
