//! Bans and locks go to several listeners: the audit log writes them, the metrics
//! count them. The defence takes one [`DefenceEvents`]; this hands each event to all.

use std::sync::Arc;

use auth::defence::DefenceEvents;

/// Tells every listener, in order.
pub(crate) struct DefenceFanOut(pub(crate) Vec<Arc<dyn DefenceEvents>>);

impl DefenceEvents for DefenceFanOut {
    fn banned(&self, source: &str, accounts: u32, until: i64) {
        for events in &self.0 {
            events.banned(source, accounts, until);
        }
    }

    fn locked(&self, user: &str, failures: u32, until: i64) {
        for events in &self.0 {
            events.locked(user, failures, until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Seen(Mutex<Vec<String>>);

    impl DefenceEvents for Seen {
        fn banned(&self, source: &str, accounts: u32, _until: i64) {
            self.0
                .lock()
                .unwrap()
                .push(format!("ban {source} {accounts}"));
        }
        fn locked(&self, user: &str, failures: u32, _until: i64) {
            self.0
                .lock()
                .unwrap()
                .push(format!("lock {user} {failures}"));
        }
    }

    #[test]
    fn every_listener_hears_every_event() {
        let (a, b) = (Arc::new(Seen::default()), Arc::new(Seen::default()));
        let fan = DefenceFanOut(vec![a.clone(), b.clone()]);
        fan.banned("192.0.2.1", 10, 0);
        fan.locked("alice", 50, 0);
        for seen in [a, b] {
            assert_eq!(
                *seen.0.lock().unwrap(),
                ["ban 192.0.2.1 10", "lock alice 50"]
            );
        }
    }
}
