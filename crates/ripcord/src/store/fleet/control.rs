//! The control lane (transitions, probe permits, probe verdicts: each sent
//! at once, never behind a sync) and the notice listener (pushed state
//! changes, applied as they arrive).

use std::sync::atomic::Ordering;
use std::sync::Weak;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};

use super::{Control, Shared};
use crate::store::FleetNotice;

pub(super) async fn run(shared: Weak<Shared>, mut rx: mpsc::UnboundedReceiver<Control>) {
    while let Some(msg) = rx.recv().await {
        let Some(s) = shared.upgrade() else { return };
        s.control(msg).await;
    }
}

pub(super) async fn listen(shared: Weak<Shared>, mut rx: broadcast::Receiver<FleetNotice>) {
    loop {
        let n = rx.recv().await;
        let Some(s) = shared.upgrade() else { return };
        match n {
            Ok(n) => s.notice(&n),
            // Missed notices are repaired by a reconciliation pass.
            Err(RecvError::Lagged(_)) => s.missed_notices.store(true, Ordering::Release),
            Err(RecvError::Closed) => return,
        }
    }
}

impl Shared {
    async fn control(&self, msg: Control) {
        match msg {
            Control::Transition(who, req) => {
                let result = self.call(self.store.transition(&req)).await;
                let Some(m) = who.upgrade() else { return };
                let Some(link) = m.link() else { return };
                link.pending.fetch_sub(1, Ordering::AcqRel);
                match result {
                    Ok(r) => {
                        self.health(Ok(()));
                        if r.applied {
                            link.fleet_epoch.fetch_max(r.view.epoch, Ordering::AcqRel);
                            link.note_override(&r.view);
                        } else if r.quorum_refused {
                            // Too few instances see it: stay open here only.
                            link.local_only.store(true, Ordering::Release);
                        } else {
                            link.note_override(&r.view);
                            m.adopt(&r.view, None);
                        }
                    }
                    Err(e) => self.health(Err(&e)),
                }
            }
            Control::WantProbe(who) => {
                let Some(m) = who.upgrade() else { return };
                let Some(link) = m.link() else { return };
                let epoch = link.fleet_epoch.load(Ordering::Acquire);
                let limit = m.half_open_limit();
                let r = self
                    .call(self.store.acquire_probe(m.name(), epoch, limit, self.ttl))
                    .await;
                link.probe_answered();
                match r {
                    Ok(granted) => {
                        self.health(Ok(()));
                        if granted && link.fleet_epoch.load(Ordering::Acquire) == epoch {
                            link.granted.fetch_add(1, Ordering::AcqRel);
                        }
                    }
                    Err(e) => self.health(Err(&e)),
                }
            }
            Control::Probe(who, report) => {
                let r = self.call(self.store.report_probe(&report)).await;
                let Some(m) = who.upgrade() else { return };
                match r {
                    Ok(view) => {
                        self.health(Ok(()));
                        if let Some(link) = m.link() {
                            link.note_override(&view);
                        }
                        m.adopt(&view, None);
                    }
                    Err(e) => self.health(Err(&e)),
                }
            }
        }
    }

    fn notice(&self, n: &FleetNotice) {
        for m in self.named(&n.view.name) {
            if let Some(link) = m.link() {
                link.note_override(&n.view);
            }
            m.adopt(&n.view, Some(n));
        }
    }
}
